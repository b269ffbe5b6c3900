//! One TCP connection: the socket, its te-proto link and the byte shuttling
//! between them. Payload bytes go straight between the socket and
//! registered host memory: one vectored write of frame headers plus the
//! payload span, one read straight into the destination span.
//!
//! Device memory, which the host cannot address, is staged through two
//! bounded buffers of the connection, reused for every payload: arriving
//! bytes land in the read buffer and the driver copies them to the device;
//! a payload to send is copied from the device into the bounce buffer
//! (at most one frame's payload) before its frame leaves, so a failed copy
//! fails that one transfer instead of the connection.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use te_proto::link::{Link, PayloadDest};
use te_proto::wire::MAX_CONTROL_LEN;
use te_proto::{Entry, Instant, Registry, Span};

use crate::devices::Devices;
use crate::mem::{host_bytes, host_bytes_mut};
use crate::same_host::ConnShm;

/// Read buffer: control frames and small payloads arrive through it.
const READ_BUF: usize = 256 << 10;
/// Write buffer: several frames are gathered into one write.
const WRITE_BUF: usize = 256 << 10;
/// Payloads up to this size are copied into the write buffer behind their
/// header; larger ones are sent straight from their memory.
const COPY_PAYLOAD_MAX: usize = 16 << 10;
/// Payloads at least this large are read straight into their destination;
/// smaller ones go through the read buffer, saving a system call each.
const DIRECT_READ_MIN: u64 = 32 << 10;
/// While large payloads arrive, the read buffer takes this much at a time:
/// a frame header and body (40 bytes at most for data frames) and a few
/// payload bytes, so that the rest of the payload is read straight into its
/// destination instead of being copied twice.
const HEADER_READ: usize = 64;

pub(crate) type Reg = Registry<Box<[Entry]>>;

/// What a read or flush left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// The socket has nothing more (read) or takes nothing more (write) now.
    Blocked,
    /// Nothing left to write.
    Idle,
    /// The link will not take input until its events are drained.
    Stalled,
    /// The peer closed its side.
    Eof,
}

pub(crate) struct Conn {
    pub stream: TcpStream,
    pub link: Link,
    pub peer_addr: SocketAddr,
    /// The opened segment this connection serves, for connections we made.
    pub segment: Option<usize>,
    /// A non-blocking connect has not completed yet.
    pub connecting: bool,
    /// When a closed link's last frames stop waiting to be written.
    pub closed_at: Option<Instant>,
    /// The same-host path's state.
    pub shm: ConnShm,
    /// Accepted connections: where the peer's `Hello` came in the order of
    /// all `Hello`s this engine accepted (core/lineage.rs).
    pub ticket: Option<u64>,
    /// Accepted connections: the peer has acted on this link, and its older
    /// links are closed.
    pub fenced: bool,
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    wbuf: Box<[u8]>,
    wpos: usize,
    wend: usize,
    /// The payload following `wbuf[..wend]`.
    payload: Option<Payload>,
    /// The last frame read carried a large payload: the next is likely to,
    /// so the read buffer takes only [`HEADER_READ`] bytes at a time.
    large_payloads: bool,
    /// A payload copied out for sending (device memory, or the unsent rest
    /// of a host payload cut loose by [`detach_payload`](Conn::detach_payload));
    /// it grows to the largest such payload (at most the negotiated frame
    /// payload) and is reused.
    bounce: Vec<u8>,
}

/// A frame payload being sent, and how much of it is sent.
#[derive(Clone, Copy)]
enum Payload {
    /// Sent straight from host memory the link holds (a pinned region or a
    /// running write task's span) until it reports `payload_sent`.
    Memory { span: Span, sent: usize },
    /// Sent from `bounce[..len]`: the link's hold has been released.
    Bounce { len: usize, sent: usize },
}

impl Conn {
    pub fn new(stream: TcpStream, link: Link, peer_addr: SocketAddr, segment: Option<usize>) -> Conn {
        Conn {
            stream,
            link,
            peer_addr,
            segment,
            connecting: segment.is_some(),
            closed_at: None,
            shm: ConnShm::default(),
            ticket: None,
            fenced: false,
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            rpos: 0,
            rend: 0,
            wbuf: vec![0; WRITE_BUF].into_boxed_slice(),
            wpos: 0,
            wend: 0,
            payload: None,
            large_payloads: false,
            bounce: Vec::new(),
        }
    }

    /// Makes the coming close a reset (`SO_LINGER` 0): the kernel drops
    /// what is queued instead of delivering it after the link is gone.
    pub fn reset_on_close(&self) {
        let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(std::time::Duration::ZERO));
    }

    /// Forgets every byte not yet written (the socket is gone or the peer
    /// does not read), releasing the payload's hold on its memory.
    pub fn discard_writes(&mut self, reg: &mut Reg) {
        self.wpos = 0;
        self.wend = 0;
        if let Some(Payload::Memory { .. }) = self.payload.take() {
            self.link.payload_sent(reg);
        }
    }

    /// When the payload being sent lies in `within` (host memory), copies
    /// its unsent rest into the bounce buffer and releases the link's hold
    /// on that memory: a cancel or an unregister then ends at once, however
    /// slowly the peer reads. Costs at most one frame payload of copying.
    pub fn detach_payload(&mut self, within: Span, reg: &mut Reg) {
        let Some(Payload::Memory { span, sent }) = self.payload else {
            return;
        };
        let overlaps = span.location == within.location
            && span.addr < within.addr.saturating_add(within.len)
            && within.addr < span.addr.saturating_add(span.len);
        if !overlaps {
            return;
        }
        // SAFETY: as in `flush`: the link still holds this memory.
        let rest = unsafe { &host_bytes(span)[sent..] };
        self.bounce.clear();
        self.bounce.extend_from_slice(rest);
        self.payload = Some(Payload::Bounce {
            len: rest.len(),
            sent: 0,
        });
        self.link.payload_sent(reg);
    }

    /// Bytes of the bounce buffer (device payloads, and host payloads cut
    /// loose by [`detach_payload`](Self::detach_payload)).
    pub fn bounce_len(&self) -> usize {
        self.bounce.len()
    }

    /// Whether bytes are waiting to be written.
    pub fn has_pending_write(&self) -> bool {
        self.wpos < self.wend || self.payload.is_some() || self.link.wants_transmit()
    }

    /// Reads until the socket would block, feeding the link and landing
    /// payloads where it says.
    pub fn read(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) -> io::Result<Flow> {
        loop {
            if let Some(dest) = self.link.poll_payload() {
                let buffered = self.rend - self.rpos;
                match dest {
                    PayloadDest::Memory(span) if buffered > 0 => {
                        let n = buffered.min(span.len as usize);
                        let part = Span {
                            len: n as u64,
                            ..span
                        };
                        let src = &self.rbuf[self.rpos..self.rpos + n];
                        if span.location.is_host() {
                            // SAFETY: te-proto hands out destinations only inside
                            // registered regions (pinned for the peer's write) or a
                            // running task's local span (pinned at submission).
                            unsafe { host_bytes_mut(part) }.copy_from_slice(src);
                        } else if let Err(e) = devices.write(part, src) {
                            // The bytes stay buffered; the link now discards them.
                            self.link.landing_failed(e, reg);
                            continue;
                        }
                        self.rpos += n;
                        self.link.payload_landed(now, n as u64, reg);
                    }
                    PayloadDest::Memory(span) if span.len >= DIRECT_READ_MIN && span.location.is_host() => {
                        // SAFETY: as above.
                        let dst = unsafe { host_bytes_mut(span) };
                        match read_some(&mut self.stream, dst)? {
                            Some(0) => return Ok(Flow::Eof),
                            Some(n) => self.link.payload_landed(now, n as u64, reg),
                            None => return Ok(Flow::Blocked),
                        }
                    }
                    PayloadDest::Discard(len) if buffered > 0 => {
                        let n = buffered.min(len as usize);
                        self.rpos += n;
                        self.link.payload_landed(now, n as u64, reg);
                    }
                    PayloadDest::Memory(_) | PayloadDest::Discard(_) => {
                        if let Some(flow) = self.refill()? {
                            return Ok(flow);
                        }
                    }
                }
                continue;
            }
            if self.rpos < self.rend {
                let used = self.link.handle_input(now, &self.rbuf[self.rpos..self.rend], reg);
                self.rpos += used;
                match self.link.poll_payload() {
                    // Only payloads read straight into host memory gain from
                    // short reads; device payloads are staged through `rbuf`.
                    Some(PayloadDest::Memory(span)) => {
                        self.large_payloads = span.len >= DIRECT_READ_MIN && span.location.is_host();
                    }
                    Some(PayloadDest::Discard(_)) => self.large_payloads = false,
                    None if used == 0 => return Ok(Flow::Stalled),
                    None => self.large_payloads = false,
                }
                continue;
            }
            if let Some(flow) = self.refill()? {
                return Ok(flow);
            }
        }
    }

    /// Reads into the (drained) read buffer; `Some` when nothing was read.
    fn refill(&mut self) -> io::Result<Option<Flow>> {
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        }
        if self.rend == self.rbuf.len() {
            // Keep the unconsumed tail; the link takes partial frames, so
            // this happens only while input is stalled.
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
            if self.rend == self.rbuf.len() {
                return Ok(Some(Flow::Stalled));
            }
        }
        let end = if self.large_payloads {
            // The rest of a payload that came short (less than a direct
            // read's worth) and the next header, in one read.
            let rest = match self.link.poll_payload() {
                Some(PayloadDest::Memory(span)) => span.len as usize,
                _ => 0,
            };
            self.rbuf.len().min(self.rend + rest + HEADER_READ)
        } else {
            self.rbuf.len()
        };
        match read_some(&mut self.stream, &mut self.rbuf[self.rend..end])? {
            Some(0) => Ok(Some(Flow::Eof)),
            Some(n) => {
                self.rend += n;
                Ok(None)
            }
            None => Ok(Some(Flow::Blocked)),
        }
    }

    /// Writes what the link has until the socket would block.
    pub fn flush(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) -> io::Result<Flow> {
        loop {
            if self.wpos == self.wend && self.payload.is_none() {
                self.wpos = 0;
                self.wend = 0;
                self.gather(now, reg, devices);
                if self.wend == 0 {
                    return Ok(Flow::Idle);
                }
            }
            let head = &self.wbuf[self.wpos..self.wend];
            let tail: &[u8] = match self.payload {
                // SAFETY: te-proto names only spans of registered memory pinned
                // for a peer's read, or a running write task's local span,
                // and holds them until `payload_sent`.
                Some(Payload::Memory { span, sent }) => unsafe { &host_bytes(span)[sent..] },
                Some(Payload::Bounce { len, sent }) => &self.bounce[sent..len],
                None => &[],
            };
            let bufs = [IoSlice::new(head), IoSlice::new(tail)];
            let n = match self.stream.write_vectored(&bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let from_head = n.min(head.len());
            self.wpos += from_head;
            match self.payload.as_mut() {
                Some(Payload::Memory { span, sent }) => {
                    *sent += n - from_head;
                    if *sent as u64 == span.len {
                        self.payload = None;
                        self.link.payload_sent(reg);
                    }
                }
                Some(Payload::Bounce { len, sent }) => {
                    *sent += n - from_head;
                    if sent == len {
                        self.payload = None;
                    }
                }
                None => {}
            }
        }
    }
}

impl Conn {
    /// Fills the write buffer with as many frames as fit. Small payloads
    /// are copied in behind their headers, so that a burst of small frames
    /// leaves in one system call; the first large payload ends the gathering
    /// and is sent straight from its memory (host) or from the bounce
    /// buffer it was copied into (device). A device payload that cannot be
    /// copied is not sent: its frame is taken back and the link fails that
    /// one transfer.
    fn gather(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) {
        while self.wbuf.len() - self.wend >= MAX_CONTROL_LEN {
            let Some(t) = self.link.poll_transmit(now, &mut self.wbuf[self.wend..], reg) else {
                return;
            };
            self.wend += t.len;
            let Some(span) = t.payload else { continue };
            let len = span.len as usize;
            let inline = len <= COPY_PAYLOAD_MAX && self.wbuf.len() - self.wend >= len;
            let staged = if inline {
                load(span, &mut self.wbuf[self.wend..self.wend + len], devices)
            } else if span.location.is_host() {
                self.payload = Some(Payload::Memory { span, sent: 0 });
                return;
            } else {
                if self.bounce.len() < len {
                    self.bounce.resize(len, 0);
                }
                devices.read(span, &mut self.bounce[..len])
            };
            match staged {
                Err(e) => self.wend -= self.link.payload_unavailable(e, reg),
                Ok(()) if inline => {
                    self.wend += len;
                    self.link.payload_sent(reg);
                }
                Ok(()) => {
                    // Copied out: the link's hold can go now.
                    self.link.payload_sent(reg);
                    self.payload = Some(Payload::Bounce { len, sent: 0 });
                    return;
                }
            }
        }
    }
}

/// Copies the bytes of `span`, host or device memory, into `dst`.
fn load(span: Span, dst: &mut [u8], devices: &mut Devices) -> te_proto::Result<()> {
    if span.location.is_host() {
        // SAFETY: as in `flush`: a pinned region or a running write task's span.
        dst.copy_from_slice(unsafe { host_bytes(span) });
        Ok(())
    } else {
        devices.read(span, dst)
    }
}

/// One read: `Some(n)` bytes (0 at end of stream), `None` when it would block.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

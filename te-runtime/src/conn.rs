//! One TCP connection: the socket, its te-proto link and the byte shuttling
//! between them. Payload bytes go straight between the socket and
//! registered host memory: one vectored write of frame headers plus the
//! payload span, one read straight into the destination span.
//!
//! Device memory, which the host cannot address, is staged through the
//! connection's two rings of driver staging buffers (crate::staging), with
//! asynchronous copies: a payload to send is copied from the device into a
//! slot while the frames before it are still on the socket, and its frame
//! leaves only once the copy has ended, so a failed copy fails that one
//! transfer instead of the connection; arriving bytes are copied from the
//! read buffer into a slot and on to the device while the next ones are
//! read, and are reported landed (which may complete the transfer) only
//! once their copy has ended.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpStream;
use te_proto::link::{Link, PayloadDest};
use te_proto::wire::MAX_CONTROL_LEN;
use te_proto::{Entry, Instant, Registry, Span};

use crate::devices::Devices;
use crate::mem::{host_bytes, host_bytes_mut};
use crate::same_host::ConnShm;
use crate::staging::{Copy, Ring};

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
/// How long a connection going away waits for its device copies, all of
/// them together.
pub(crate) const COPY_DRAIN_LIMIT: Duration = Duration::from_secs(10);

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
    /// Waiting for a device copy to end.
    Device,
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
    /// When the event loop must look at this connection next
    /// ([`next_due`](Self::next_due)), as of the last time the core served
    /// it: every change to the connection goes through that, so the loop
    /// reads this instead of asking every connection every round.
    pub due: Option<Instant>,
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
    /// What is to be written, in order: batches of frames, each with the
    /// payload that follows them.
    out: VecDeque<Batch>,
    /// Buffers of written batches, for the next ones.
    spare: Vec<Box<[u8]>>,
    /// The last frame read carried a large payload: the next is likely to,
    /// so the read buffer takes only [`HEADER_READ`] bytes at a time.
    large_payloads: bool,
    /// Staging slots of device payloads being sent.
    send_ring: Ring,
    /// Staging slots of device payloads arriving.
    recv_ring: Ring,
    /// Copies of arriving device payload bytes to the device, in order.
    landings: VecDeque<Landing>,
    /// A copy of the arriving payload failed: the landing fails with this
    /// once the copies still in flight have ended.
    landing_error: Option<te_proto::Status>,
    /// Bytes of that payload taken from the socket and not placed.
    discarded: u64,
}

/// Frames gathered for one write, and the payload that follows them.
struct Batch {
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    payload: Option<Payload>,
}

impl Batch {
    /// The link gives out no further frame while this batch's payload holds
    /// its memory.
    fn holds_link(&self) -> bool {
        matches!(
            self.payload,
            Some(Payload::Memory { .. }) | Some(Payload::Staged { copy: Some(_), .. })
        )
    }

    /// Whether more frames may be gathered into it.
    fn open(&self) -> bool {
        self.payload.is_none() && self.buf.len() - self.end >= MAX_CONTROL_LEN
    }
}

/// A frame payload being sent, and how much of it is sent.
enum Payload {
    /// Sent straight from host memory the link holds (a pinned region or a
    /// running write task's span) until it reports `payload_sent`.
    Memory { span: Span, sent: usize },
    /// The unsent rest of a host payload cut loose by
    /// [`detach_payload`](Conn::detach_payload): the link's hold is released.
    Bounce { bytes: Vec<u8>, sent: usize },
    /// Device memory copied into slot `slot` of the send ring: while `copy`
    /// runs the link holds the memory and no byte of the batch is written;
    /// after it, the slot's bytes are sent.
    Staged {
        slot: usize,
        len: usize,
        sent: usize,
        copy: Option<Copy>,
    },
}

/// Arriving payload bytes on their way from a receive slot to the device.
struct Landing {
    slot: usize,
    len: u64,
    copy: Copy,
}

impl Conn {
    /// A connection staging device payloads through `staging_slots` slots
    /// per direction.
    pub fn new(
        stream: TcpStream,
        link: Link,
        peer_addr: SocketAddr,
        segment: Option<usize>,
        staging_slots: usize,
    ) -> Conn {
        Conn {
            stream,
            link,
            peer_addr,
            segment,
            connecting: segment.is_some(),
            closed_at: None,
            due: None,
            shm: ConnShm::default(),
            ticket: None,
            fenced: false,
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            rpos: 0,
            rend: 0,
            out: VecDeque::new(),
            spare: Vec::new(),
            large_payloads: false,
            send_ring: Ring::new(staging_slots),
            recv_ring: Ring::new(staging_slots),
            landings: VecDeque::new(),
            landing_error: None,
            discarded: 0,
        }
    }

    /// Makes the coming close a reset (`SO_LINGER` 0): the kernel drops
    /// what is queued instead of delivering it after the link is gone.
    pub fn reset_on_close(&self) {
        let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(std::time::Duration::ZERO));
    }

    /// Forgets every byte not yet written (the socket is gone or the peer
    /// does not read), releasing the payloads' holds on their memory once
    /// no device copies it any more, and gives the staging slots back.
    pub fn discard_writes(&mut self, now: impl Fn() -> Instant, reg: &mut Reg, devices: &mut Devices) {
        let deadline = std::time::Instant::now() + COPY_DRAIN_LIMIT;
        for batch in self.out.drain(..) {
            match batch.payload {
                Some(Payload::Memory { .. }) => self.link.payload_sent(reg),
                Some(Payload::Staged { copy: Some(c), .. }) => {
                    if c.wait(devices, &now, deadline).is_none() {
                        tracing::error!(
                            "a device copy of {} did not end in {COPY_DRAIN_LIMIT:?}",
                            self.peer_addr
                        );
                    }
                    self.link.payload_sent(reg);
                }
                _ => {}
            }
        }
        // Arriving bytes still on their way to the device are not reported:
        // the link fails their transfer when it learns of the disconnect.
        for l in self.landings.drain(..) {
            let _ = l.copy.wait(devices, &now, deadline);
        }
        self.send_ring.free_all(devices);
        self.recv_ring.free_all(devices);
    }

    /// When a payload being sent lies in `within` (host memory), copies its
    /// unsent rest into a buffer of its own and releases the link's hold on
    /// that memory: a cancel or an unregister then ends at once, however
    /// slowly the peer reads. Costs at most one frame payload of copying.
    /// (A device payload's hold ends with its copy to staging.)
    pub fn detach_payload(&mut self, within: Span, reg: &mut Reg) {
        for batch in self.out.iter_mut() {
            let Some(Payload::Memory { span, sent }) = batch.payload else {
                continue;
            };
            let overlaps = span.location == within.location
                && span.addr < within.addr.saturating_add(within.len)
                && within.addr < span.addr.saturating_add(span.len);
            if !overlaps {
                continue;
            }
            // SAFETY: as in `flush`: the link still holds this memory.
            let rest = unsafe { &host_bytes(span)[sent..] };
            batch.payload = Some(Payload::Bounce {
                bytes: rest.to_vec(),
                sent: 0,
            });
            self.link.payload_sent(reg);
        }
    }

    /// Bytes of host memory this connection holds to stage payloads: its
    /// staging slots and the rests of host payloads cut loose.
    pub fn bounce_len(&self) -> usize {
        let cut: usize = self
            .out
            .iter()
            .map(|b| match &b.payload {
                Some(Payload::Bounce { bytes, .. }) => bytes.len(),
                _ => 0,
            })
            .sum();
        cut + self.send_ring.bytes_held() + self.recv_ring.bytes_held()
    }

    /// Whether bytes are waiting to be written.
    pub fn has_pending_write(&self) -> bool {
        !self.out.is_empty() || self.link.wants_transmit()
    }

    /// When the event loop must look at this connection next, asked at
    /// `now`: the link's next timer (or the end of a closed link's grace),
    /// the same-host path's, and soon while a device copy is in flight.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        let copies = self.copies_in_flight().then(|| now + crate::staging::DEVICE_POLL);
        [
            self.link.poll_timeout().or(self.closed_at),
            self.shm.deadline(),
            copies,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a device copy of this connection is in flight (the event
    /// loop then looks at it again after [`DEVICE_POLL`](crate::staging::DEVICE_POLL)).
    pub fn copies_in_flight(&self) -> bool {
        self.shm.copies_in_flight()
            || !self.landings.is_empty()
            || self
                .out
                .back()
                .is_some_and(|b| matches!(b.payload, Some(Payload::Staged { copy: Some(_), .. })))
    }

    /// Reads until the socket would block, feeding the link and landing
    /// payloads where it says.
    pub fn read(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) -> io::Result<Flow> {
        loop {
            if !self.landings.is_empty() && self.poll_landings(now, reg, devices) {
                continue;
            }
            if let Some(dest) = self.link.poll_payload() {
                let buffered = self.rend - self.rpos;
                match dest {
                    PayloadDest::Memory(span) if !span.location.is_host() => {
                        let ahead: u64 = self.landings.iter().map(|l| l.len).sum();
                        if ahead >= span.len {
                            // All of it is on its way to the device.
                            return Ok(Flow::Device);
                        }
                        if buffered == 0 {
                            if let Some(flow) = self.refill()? {
                                return Ok(flow);
                            }
                            continue;
                        }
                        let n = buffered.min((span.len - ahead) as usize);
                        if !self.stage_landing(now, span, ahead, n, reg, devices) {
                            return Ok(Flow::Device);
                        }
                    }
                    PayloadDest::Memory(span) if buffered > 0 => {
                        let n = buffered.min(span.len as usize);
                        let part = Span {
                            len: n as u64,
                            ..span
                        };
                        let src = &self.rbuf[self.rpos..self.rpos + n];
                        // SAFETY: te-proto hands out destinations only inside
                        // registered regions (pinned for the peer's write) or a
                        // running task's local span (pinned at submission).
                        unsafe { host_bytes_mut(part) }.copy_from_slice(src);
                        self.rpos += n;
                        self.link.payload_landed(now, n as u64, reg);
                    }
                    PayloadDest::Memory(span) if span.len >= DIRECT_READ_MIN => {
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

    /// Starts copying the next `n` buffered bytes of the device payload
    /// `span` (of which `ahead` bytes are on their way already) through a
    /// receive slot; `false` while every slot is busy or a failed landing
    /// waits for its copies. A copy that cannot start fails the landing.
    fn stage_landing(
        &mut self,
        now: Instant,
        span: Span,
        ahead: u64,
        n: usize,
        reg: &mut Reg,
        devices: &mut Devices,
    ) -> bool {
        if self.landing_error.is_some() {
            return false;
        }
        let started = match self.recv_ring.take(devices, span.location, n) {
            Ok(None) => return false,
            Ok(Some(slot)) => self
                .recv_ring
                .bytes_mut(devices, slot)
                .map(|dst| dst[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]))
                .and_then(|()| {
                    self.recv_ring
                        .store(devices, now, slot, span.location, span.addr + ahead, n as u64)
                })
                .map(|copy| (slot, copy))
                .inspect_err(|_| self.recv_ring.release(slot)),
            Err(e) => Err(e),
        };
        match started {
            Ok((slot, copy)) => {
                self.rpos += n;
                self.landings.push_back(Landing {
                    slot,
                    len: n as u64,
                    copy,
                });
            }
            // The bytes stay buffered; the link discards them with the rest
            // once the copies before them have ended.
            Err(e) => self.landing_error = Some(e),
        }
        self.end_failed_landing(now, reg);
        true
    }

    /// Reports the arriving bytes whose copies to the device have ended, in
    /// order; `true` when any were. After a failed copy, the bytes of the
    /// copies behind it are not reported landed but discarded.
    fn poll_landings(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) -> bool {
        let mut progressed = false;
        while let Some(front) = self.landings.front() {
            let Some(outcome) = front.copy.poll(devices, now) else {
                break;
            };
            let l = self.landings.pop_front().expect("front");
            self.recv_ring.release(l.slot);
            match outcome {
                Ok(()) if self.landing_error.is_none() => self.link.payload_landed(now, l.len, reg),
                Ok(()) => self.discarded += l.len,
                Err(e) => {
                    self.discarded += l.len;
                    self.landing_error.get_or_insert(e);
                }
            }
            progressed = true;
        }
        self.end_failed_landing(now, reg);
        progressed
    }

    /// Once a failed landing's copies have all ended (so that no device
    /// writes memory the link then releases), the link fails its transfer
    /// and discards its bytes, those taken from the socket included.
    fn end_failed_landing(&mut self, now: Instant, reg: &mut Reg) {
        if !self.landings.is_empty() {
            return;
        }
        if let Some(why) = self.landing_error.take() {
            self.link.landing_failed(why, reg);
            let taken = std::mem::take(&mut self.discarded);
            if taken > 0 {
                self.link.payload_landed(now, taken, reg);
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

    /// Writes what the link has until the socket would block (or the next
    /// batch waits for its device copy).
    pub fn flush(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) -> io::Result<Flow> {
        loop {
            self.poll_staged(now, reg, devices);
            self.gather(now, reg, devices);
            let Some(batch) = self.out.front_mut() else {
                return Ok(Flow::Idle);
            };
            if matches!(batch.payload, Some(Payload::Staged { copy: Some(_), .. })) {
                // No byte of a frame leaves before its payload is in hand.
                return Ok(Flow::Device);
            }
            let head = &batch.buf[batch.pos..batch.end];
            let tail: &[u8] = match &batch.payload {
                // SAFETY: te-proto names only spans of registered memory pinned
                // for a peer's read, or a running write task's local span,
                // and holds them until `payload_sent`.
                Some(Payload::Memory { span, sent }) => unsafe { &host_bytes(*span)[*sent..] },
                Some(Payload::Bounce { bytes, sent }) => &bytes[*sent..],
                Some(Payload::Staged { slot, len, sent, .. }) => {
                    match self.send_ring.bytes(devices, *slot, *len) {
                        Ok(b) => &b[*sent..],
                        Err(e) => return Err(io::Error::other(format!("staging slot {slot}: {e}"))),
                    }
                }
                None => &[],
            };
            if head.is_empty() && tail.is_empty() {
                self.retire_front(reg);
                continue;
            }
            let bufs = [IoSlice::new(head), IoSlice::new(tail)];
            let n = match self.stream.write_vectored(&bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let from_head = n.min(head.len());
            batch.pos += from_head;
            match batch.payload.as_mut() {
                Some(Payload::Memory { sent, .. })
                | Some(Payload::Bounce { sent, .. })
                | Some(Payload::Staged { sent, .. }) => *sent += n - from_head,
                None => {}
            }
        }
    }

    /// Drops the written front batch: its memory payload's hold ends, its
    /// staging slot is free again and its buffer kept for the next batch.
    fn retire_front(&mut self, reg: &mut Reg) {
        let Some(batch) = self.out.pop_front() else {
            return;
        };
        match batch.payload {
            Some(Payload::Memory { .. }) => self.link.payload_sent(reg),
            Some(Payload::Staged { slot, .. }) => self.send_ring.release(slot),
            _ => {}
        }
        self.spare.push(batch.buf);
    }

    /// Ends the hold of the last batch's device payload once its copy to
    /// staging has ended; a failed copy takes its frame back, and the link
    /// fails that one transfer.
    fn poll_staged(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) {
        let Some(batch) = self.out.back_mut() else {
            return;
        };
        let Some(Payload::Staged {
            slot, copy: Some(c), ..
        }) = &batch.payload
        else {
            return;
        };
        let slot = *slot;
        match c.poll(devices, now) {
            None => {}
            Some(Ok(())) => {
                if let Some(Payload::Staged { copy, .. }) = batch.payload.as_mut() {
                    *copy = None;
                }
                self.link.payload_sent(reg);
            }
            Some(Err(e)) => {
                batch.payload = None;
                batch.end -= self.link.payload_unavailable(e, reg);
                self.send_ring.release(slot);
            }
        }
    }
}

impl Conn {
    /// Gathers frames into batches, ahead of the socket. Small payloads
    /// are copied in behind their headers, so that a burst of small frames
    /// leaves in one system call; a large payload closes its batch and is
    /// sent straight from its memory (host) or from the staging slot it is
    /// being copied into (device). While a device payload's copy runs the
    /// link gives out nothing more; once it has ended, the next frames are
    /// gathered into a new batch (and their device payload copied) while
    /// the batch before them is still on the socket, up to one batch per
    /// staging slot (so that a device payload always finds a free slot).
    /// A device payload that cannot be copied is not sent: its frame is
    /// taken back and the link fails that one transfer.
    fn gather(&mut self, now: Instant, reg: &mut Reg, devices: &mut Devices) {
        loop {
            if self.out.back().is_some_and(Batch::holds_link) {
                return;
            }
            if !self.out.back().is_some_and(Batch::open) {
                if self.out.len() >= self.send_ring.cap() || !self.link.wants_transmit() {
                    return;
                }
                let buf = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| vec![0; WRITE_BUF].into_boxed_slice());
                self.out.push_back(Batch {
                    buf,
                    pos: 0,
                    end: 0,
                    payload: None,
                });
            }
            let batch = self.out.back_mut().expect("a batch");
            let Some(t) = self.link.poll_transmit(now, &mut batch.buf[batch.end..], reg) else {
                if batch.end == 0 {
                    let b = self.out.pop_back().expect("the empty batch");
                    self.spare.push(b.buf);
                }
                return;
            };
            batch.end += t.len;
            let Some(span) = t.payload else { continue };
            let len = span.len as usize;
            if len <= COPY_PAYLOAD_MAX && batch.buf.len() - batch.end >= len {
                let dst = &mut batch.buf[batch.end..batch.end + len];
                match load(span, dst, devices) {
                    Ok(()) => {
                        batch.end += len;
                        self.link.payload_sent(reg);
                    }
                    Err(e) => batch.end -= self.link.payload_unavailable(e, reg),
                }
            } else if span.location.is_host() {
                batch.payload = Some(Payload::Memory { span, sent: 0 });
                return;
            } else {
                let staged = match self.send_ring.take(devices, span.location, len) {
                    Ok(Some(slot)) => self
                        .send_ring
                        .load(devices, now, slot, span.addr, span.len)
                        .map(|copy| (slot, copy))
                        .inspect_err(|_| self.send_ring.release(slot)),
                    // One slot per batch: a batch without a slot cannot be.
                    Ok(None) => Err(te_proto::status!(RuntimeError, "no staging slot free")),
                    Err(e) => Err(e),
                };
                match staged {
                    Ok((slot, copy)) => {
                        batch.payload = Some(Payload::Staged {
                            slot,
                            len,
                            sent: 0,
                            copy: Some(copy),
                        });
                        return;
                    }
                    Err(e) => batch.end -= self.link.payload_unavailable(e, reg),
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

//! Completion queues and completion channels.
//!
//! A CQ holds at most `cqe` entries. One more is an overrun: the entry is lost, the CQ stays
//! broken (`ibv_poll_cq` returns `-EOVERFLOW` from then on) and the queue pair that produced
//! it moves to the error state, as a NIC does on `IBV_EVENT_CQ_ERR`. `ibv_req_notify_cq` arms
//! the CQ once: the next entry added writes one event (the `struct ibv_cq *`, 8 bytes, as the
//! kernel's `ib_uverbs_comp_event_desc`) into the channel's pipe, whose read end is the
//! channel's `fd`. Entries already queued when arming raise no event, as on hardware.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::abi::IbvWc;
use crate::qp::QpShared;

/// CQ overruns since the library was loaded.
pub static OVERRUNS: AtomicU64 = AtomicU64::new(0);

/// A completion channel: a pipe.
pub struct ChannelState {
    /// The read end (`ibv_comp_channel.fd`).
    pub read_fd: i32,
    /// The write end (non-blocking).
    pub write_fd: i32,
}

impl ChannelState {
    /// A new pipe, or the errno.
    pub fn new() -> Result<ChannelState, i32> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(errno());
        }
        // SAFETY: fcntl on a descriptor just created and owned here.
        unsafe {
            let fl = libc::fcntl(fds[1], libc::F_GETFL);
            libc::fcntl(fds[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(ChannelState {
            read_fd: fds[0],
            write_fd: fds[1],
        })
    }

    fn notify(&self, cq: u64) {
        let b = cq.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own pipe. A full pipe (8192 events
        // nobody read) loses the event; the consumer still finds the entries by polling.
        unsafe { libc::write(self.write_fd, b.as_ptr().cast(), b.len()) };
    }
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // SAFETY: both descriptors are owned by this channel and closed once.
        unsafe {
            libc::close(self.read_fd);
            libc::close(self.write_fd);
        }
    }
}

/// The errno of the calling thread.
pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// One queued completion and the send-queue slots it frees when polled.
struct Entry {
    wc: IbvWc,
    qp: Weak<QpShared>,
    slots: u32,
}

struct Inner {
    entries: VecDeque<Entry>,
    cap: usize,
    armed: bool,
    overrun: bool,
    channel: Option<Arc<ChannelState>>,
    /// Address of the `struct ibv_cq`, written into channel events.
    raw: u64,
    events: u64,
    acked: u64,
    qps: usize,
}

/// The state behind one `struct ibv_cq`.
pub struct CqState {
    inner: Mutex<Inner>,
}

impl CqState {
    /// A CQ of `cap` entries on `channel`.
    pub fn new(cap: usize, channel: Option<Arc<ChannelState>>) -> CqState {
        CqState {
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                cap,
                armed: false,
                overrun: false,
                channel,
                raw: 0,
                events: 0,
                acked: 0,
                qps: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records where the `struct ibv_cq` lives (for channel events).
    pub fn set_raw(&self, raw: u64) {
        self.lock().raw = raw;
    }

    /// Adds a completion that frees `slots` send-queue slots of `qp` when polled; `false` on
    /// an overrun (the entry is lost).
    pub fn push(&self, wc: IbvWc, qp: Weak<QpShared>, slots: u32) -> bool {
        let mut g = self.lock();
        if g.overrun || g.entries.len() >= g.cap {
            if !g.overrun {
                OVERRUNS.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "te-fake-verbs: CQ overrun ({} entries): completions are lost",
                    g.cap
                );
            }
            g.overrun = true;
            return false;
        }
        g.entries.push_back(Entry { wc, qp, slots });
        if g.armed {
            g.armed = false;
            if let Some(ch) = &g.channel {
                ch.notify(g.raw);
            }
        }
        true
    }

    /// Moves up to `out.len()` completions into `out`: the count, or `-EOVERFLOW` after an
    /// overrun.
    pub fn poll(&self, out: &mut [IbvWc]) -> i32 {
        let mut g = self.lock();
        if g.overrun {
            return -libc::EOVERFLOW;
        }
        let mut n = 0;
        while n < out.len() {
            let Some(e) = g.entries.pop_front() else { break };
            out[n] = e.wc;
            if let Some(qp) = e.qp.upgrade() {
                qp.release_slots(e.slots);
            }
            n += 1;
        }
        n as i32
    }

    /// `ibv_req_notify_cq`.
    pub fn arm(&self) {
        self.lock().armed = true;
    }

    /// `ibv_get_cq_event` delivered one event of this CQ (it must be acknowledged before the
    /// CQ can be destroyed).
    pub fn event_taken(&self) {
        self.lock().events += 1;
    }

    /// `ibv_ack_cq_events(n)`.
    pub fn ack(&self, n: u32) {
        self.lock().acked += u64::from(n);
    }

    /// Whether the CQ has an unacknowledged event or a queue pair (destroying it is `EBUSY`).
    pub fn busy(&self) -> bool {
        let g = self.lock();
        g.qps > 0 || g.acked < g.events
    }

    /// A queue pair starts (`+1`) or stops (`-1`) using the CQ.
    pub fn attach(&self, delta: isize) {
        let mut g = self.lock();
        g.qps = g.qps.saturating_add_signed(delta);
    }

    /// The channel, if any.
    pub fn channel(&self) -> Option<Arc<ChannelState>> {
        self.lock().channel.clone()
    }
}

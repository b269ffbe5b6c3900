//! Buffers announced with `LocalMap` (docs/PROTOCOL.md, "Mapped buffers")
//! and `LocalKey` ("Device buffers"): this side's announcements and
//! withdrawals waiting to be sent, and the peer's announced buffers. One
//! set of tables serves both frames ([`Buffer`]).

use crate::error::{Result, Status};
use crate::status;
use crate::wire::{LocalKey, LocalMap, RdmaKey};

/// An announcement frame of a buffer (`LocalMap` or `LocalKey`), as the
/// tables need it.
pub(super) trait Buffer: Copy + PartialEq {
    /// The buffer's id on the link.
    fn id(&self) -> u64;
    /// Its first byte and length (`len == 0`: a withdrawal).
    fn range(&self) -> (u64, u64);
    /// The withdrawal of buffer `id`.
    fn withdrawal(id: u64) -> Self;
    /// Whether it shares a byte with `other`.
    fn overlaps(&self, other: &Self) -> bool;
    /// Whether it holds all of `[addr, addr + len)`.
    fn contains(&self, addr: u64, len: u64) -> bool;
    /// Whether this is a withdrawal.
    fn is_withdraw(&self) -> bool {
        self.range().1 == 0
    }
    /// Whether the receiver answers a withdrawal once it let go of the
    /// buffer (`KeyClosed`): then the announcer keeps the slot until then.
    const CLOSED_ANSWERED: bool = false;
}

impl Buffer for LocalMap {
    fn id(&self) -> u64 {
        self.id
    }
    fn range(&self) -> (u64, u64) {
        (self.base, self.len)
    }
    fn withdrawal(id: u64) -> LocalMap {
        LocalMap::withdraw(id)
    }
    fn overlaps(&self, other: &LocalMap) -> bool {
        LocalMap::overlaps(self, other)
    }
    fn contains(&self, addr: u64, len: u64) -> bool {
        LocalMap::contains(self, addr, len)
    }
}

impl Buffer for LocalKey {
    fn id(&self) -> u64 {
        self.id
    }
    fn range(&self) -> (u64, u64) {
        (self.base, self.len)
    }
    fn withdrawal(id: u64) -> LocalKey {
        LocalKey::withdraw(id)
    }
    /// An importer closes its import before the exporter may close the
    /// export (CANN's order).
    const CLOSED_ANSWERED: bool = true;
    fn overlaps(&self, other: &LocalKey) -> bool {
        LocalKey::overlaps(self, other)
    }
    fn contains(&self, addr: u64, len: u64) -> bool {
        LocalKey::contains(self, addr, len)
    }
}

impl Buffer for RdmaKey {
    fn id(&self) -> u64 {
        self.id
    }
    fn range(&self) -> (u64, u64) {
        (self.base, self.len)
    }
    fn withdrawal(id: u64) -> RdmaKey {
        RdmaKey::withdraw(id)
    }
    /// The owner deregisters the region only once the peer's READs and
    /// WRITEs on it have ended, so none of them fails on a dead rkey.
    const CLOSED_ANSWERED: bool = true;
    fn overlaps(&self, other: &RdmaKey) -> bool {
        RdmaKey::overlaps(self, other)
    }
    fn contains(&self, addr: u64, len: u64) -> bool {
        RdmaKey::contains(self, addr, len)
    }
}

/// Most buffers announced per direction on one link. On this side's table a
/// buffer whose withdrawal has not been sent yet still takes a slot.
pub const MAX_LOCAL_MAPS: usize = 64;

/// `Invalid`: `whose` buffer `m` overlaps buffer `e`, both named by id and range.
fn overlap<B: Buffer>(whose: &str, m: &B, e: &B) -> Status {
    let ((mb, ml), (eb, el)) = (m.range(), e.range());
    status!(
        Invalid,
        "{whose}buffer {:#x} at {mb:#x}+{ml:#x} overlaps {whose}buffer {:#x} at {eb:#x}+{el:#x}",
        m.id(),
        e.id(),
    )
}

/// Where one of this side's buffers stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    /// Its `LocalMap` has not been sent yet.
    AnnounceUnsent,
    /// The peer knows it.
    Announced,
    /// The peer knows it; its withdrawal has not been sent yet.
    WithdrawUnsent,
    /// Its withdrawal was sent; the peer has not answered that it let go
    /// of it yet (buffers whose withdrawal is answered only).
    Closing,
    /// Given up waiting for before its withdrawal was sent: the withdrawal
    /// still goes, and then its slot is free (a late answer is ignored).
    GivenUp,
}

impl Out {
    /// Whether the buffer is still offered to the peer.
    fn live(self) -> bool {
        matches!(self, Out::AnnounceUnsent | Out::Announced)
    }
}

/// This side's buffers, announced or about to be.
pub(super) struct OutMaps<B = LocalMap> {
    entries: heapless::Vec<(B, Out), MAX_LOCAL_MAPS>,
    /// Withdrawn buffers given up waiting for (their slot is free): a late
    /// answer for one of them is not a violation. The oldest go first.
    abandoned: heapless::Deque<u64, MAX_LOCAL_MAPS>,
}

impl<B> Default for OutMaps<B> {
    fn default() -> Self {
        OutMaps {
            entries: heapless::Vec::new(),
            abandoned: heapless::Deque::new(),
        }
    }
}

impl<B: Buffer> OutMaps<B> {
    /// Queues the announcement of `m`. `Invalid` for a withdrawal-shaped
    /// (empty), null or wrapping range, an id in use (announced or still
    /// being withdrawn) or a range overlapping an announced buffer;
    /// `NotReady` when every slot is taken.
    pub(super) fn announce(&mut self, m: B) -> Result<()> {
        let (base, len) = m.range();
        if len == 0 {
            return Err(status!(Invalid, "buffer {:#x} of 0 bytes", m.id()));
        }
        if base == 0 || base.checked_add(len).is_none() {
            return Err(status!(
                Invalid,
                "buffer {:#x} at {base:#x}+{len:#x}: null or wrapping range",
                m.id(),
            ));
        }
        if self.entries.iter().any(|(e, _)| e.id() == m.id()) {
            return Err(status!(
                Invalid,
                "buffer id {:#x} is announced or still being withdrawn",
                m.id()
            ));
        }
        let live = |(e, st): &&(B, Out)| st.live() && e.overlaps(&m);
        if let Some((e, _)) = self.entries.iter().find(live) {
            return Err(overlap("", &m, e));
        }
        self.entries.push((m, Out::AnnounceUnsent)).map_err(|_| {
            status!(
                NotReady,
                "{MAX_LOCAL_MAPS} buffers announced or waiting to be withdrawn"
            )
        })
    }

    /// Withdraws buffer `id`: a buffer the peer knows keeps its slot until
    /// the withdrawal is sent, one it never heard of is simply forgotten.
    /// False for an id that is not announced.
    pub(super) fn withdraw(&mut self, id: u64) -> bool {
        let Some(i) = self.entries.iter().position(|(e, st)| e.id() == id && st.live()) else {
            return false;
        };
        match self.entries[i].1 {
            Out::AnnounceUnsent => {
                self.entries.swap_remove(i);
            }
            _ => self.entries[i].1 = Out::WithdrawUnsent,
        }
        true
    }

    /// Whether buffer `id` is announced (or about to be) and not withdrawn.
    pub(super) fn announced(&self, id: u64) -> bool {
        self.entries.iter().any(|(e, st)| e.id() == id && st.live())
    }

    /// Whether buffer `id` was withdrawn and the peer has not answered
    /// that it let go of it yet (false once the link is closed).
    pub(super) fn closing(&self, id: u64) -> bool {
        self.entries
            .iter()
            .any(|(e, st)| e.id() == id && matches!(st, Out::WithdrawUnsent | Out::Closing))
    }

    /// The peer let go of withdrawn buffer `id`: its slot is free. The
    /// error, a protocol violation, names a buffer not being withdrawn
    /// (one given up on is not: the answer came late).
    pub(super) fn closed(&mut self, id: u64) -> Result<()> {
        if let Some(i) = self
            .entries
            .iter()
            .position(|(e, st)| e.id() == id && *st == Out::Closing)
        {
            self.entries.swap_remove(i);
            return Ok(());
        }
        let late = self.abandoned.iter().position(|&a| a == id);
        match late {
            Some(at) => {
                // Rotate it to the front, then drop it: the order of the
                // rest is kept.
                for _ in 0..at {
                    if let Some(x) = self.abandoned.pop_front() {
                        let _ = self.abandoned.push_back(x);
                    }
                }
                self.abandoned.pop_front();
                Ok(())
            }
            None => Err(status!(
                Invalid,
                "peer closed buffer {id:#x}, which was not withdrawn"
            )),
        }
    }

    /// Stops waiting for the peer to let go of withdrawn buffer `id`: its
    /// slot is free now, or once its withdrawal is sent if that has not
    /// happened yet. False for a buffer not withdrawn.
    pub(super) fn abandon(&mut self, id: u64) -> bool {
        let Some(i) = self
            .entries
            .iter()
            .position(|(e, st)| e.id() == id && matches!(st, Out::Closing | Out::WithdrawUnsent))
        else {
            return false;
        };
        if self.entries[i].1 == Out::WithdrawUnsent {
            self.entries[i].1 = Out::GivenUp;
            return true;
        }
        self.entries.swap_remove(i);
        self.remember_abandoned(id);
        true
    }

    fn remember_abandoned(&mut self, id: u64) {
        if self.abandoned.is_full() {
            self.abandoned.pop_front();
        }
        let _ = self.abandoned.push_back(id);
    }

    /// The next `LocalMap` frame due: every withdrawal goes before any
    /// announcement, so that the peer has freed a range before it hears of
    /// a new buffer there.
    pub(super) fn next_due(&self) -> Option<B> {
        let due = |want: Out| self.entries.iter().find(|(_, st)| *st == want);
        if let Some((e, _)) = due(Out::WithdrawUnsent).or_else(|| due(Out::GivenUp)) {
            return Some(B::withdrawal(e.id()));
        }
        due(Out::AnnounceUnsent).map(|(e, _)| *e)
    }

    /// Records that `frame` (from [`next_due`](Self::next_due)) was sent.
    pub(super) fn sent(&mut self, frame: B) {
        let Some(i) = self.entries.iter().position(|(e, _)| e.id() == frame.id()) else {
            return;
        };
        if frame.is_withdraw() && self.entries[i].1 == Out::GivenUp {
            self.entries.swap_remove(i);
            if B::CLOSED_ANSWERED {
                self.remember_abandoned(frame.id());
            }
        } else if frame.is_withdraw() && B::CLOSED_ANSWERED {
            self.entries[i].1 = Out::Closing;
        } else if frame.is_withdraw() {
            self.entries.swap_remove(i);
        } else {
            self.entries[i].1 = Out::Announced;
        }
    }

    /// Forgets everything (the link closed).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.abandoned.clear();
    }
}

/// The peer's announced buffers, and those it withdrew that this side
/// has to answer (`KeyClosed`) once it let go of them.
pub(super) struct InMaps<B = LocalMap> {
    entries: heapless::Vec<B, MAX_LOCAL_MAPS>,
    /// Withdrawn buffers to answer: `true` once this side let go of it
    /// (the answer is due). At most `MAX_LOCAL_MAPS`, the oldest dropped
    /// first: a peer gives up waiting for an answer after a while anyway.
    withdrawn: heapless::Vec<(u64, bool), MAX_LOCAL_MAPS>,
}

impl<B> Default for InMaps<B> {
    fn default() -> Self {
        InMaps {
            entries: heapless::Vec::new(),
            withdrawn: heapless::Vec::new(),
        }
    }
}

impl<B: Buffer> InMaps<B> {
    /// Applies the peer's `LocalMap` or `LocalKey` (already checked by the
    /// decoder). The error, a protocol violation, names the bad value.
    pub(super) fn apply(&mut self, m: B) -> core::result::Result<(), Status> {
        if m.is_withdraw() {
            let i = self
                .entries
                .iter()
                .position(|e| e.id() == m.id())
                .ok_or_else(|| {
                    status!(
                        Invalid,
                        "peer withdrew buffer {:#x}, which it never announced",
                        m.id()
                    )
                })?;
            self.entries.swap_remove(i);
            if B::CLOSED_ANSWERED {
                if self.withdrawn.is_full() {
                    // Drop the oldest still held, not an answer that is due.
                    let at = self.withdrawn.iter().position(|w| !w.1).unwrap_or(0);
                    self.withdrawn.remove(at);
                }
                let _ = self.withdrawn.push((m.id(), false));
            }
            return Ok(());
        }
        if self.entries.iter().any(|e| e.id() == m.id()) || self.withdrawn.iter().any(|w| w.0 == m.id()) {
            return Err(status!(Invalid, "peer announced buffer {:#x} twice", m.id()));
        }
        if let Some(e) = self.entries.iter().find(|e| e.overlaps(&m)) {
            return Err(overlap("peer's ", &m, e));
        }
        self.entries.push(m).map_err(|_| {
            status!(
                Invalid,
                "peer announced buffer {:#x} beyond the limit of {MAX_LOCAL_MAPS}",
                m.id()
            )
        })
    }

    /// The buffer holding all of `[addr, addr + len)`, if any.
    pub(super) fn find(&self, addr: u64, len: u64) -> Option<B> {
        self.entries.iter().find(|e| e.contains(addr, len)).copied()
    }

    /// Every buffer, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = B> + '_ {
        self.entries.iter().copied()
    }

    /// The withdrawn buffers this side has not let go of yet.
    pub(super) fn withdrawn(&self) -> impl Iterator<Item = u64> + '_ {
        self.withdrawn.iter().filter(|w| !w.1).map(|w| w.0)
    }

    /// This side let go of withdrawn buffer `id`: its answer is due. False
    /// for an id not withdrawn (or already let go of).
    pub(super) fn let_go(&mut self, id: u64) -> bool {
        match self.withdrawn.iter_mut().find(|w| w.0 == id && !w.1) {
            Some(w) => {
                w.1 = true;
                true
            }
            None => false,
        }
    }

    /// The answer due first, if any; [`answered`](Self::answered) once sent.
    pub(super) fn answer_due(&self) -> Option<u64> {
        self.withdrawn.iter().find(|w| w.1).map(|w| w.0)
    }

    /// The answer for `id` was sent.
    pub(super) fn answered(&mut self, id: u64) {
        if let Some(i) = self.withdrawn.iter().position(|w| w.0 == id && w.1) {
            self.withdrawn.swap_remove(i);
        }
    }

    /// Forgets everything (the link closed).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.withdrawn.clear();
    }
}

//! Buffers announced with `LocalMap` (docs/PROTOCOL.md, "Mapped buffers"):
//! this side's announcements and withdrawals waiting to be sent, and the
//! peer's announced buffers.

use crate::error::{Result, Status};
use crate::status;
use crate::wire::LocalMap;

/// Most buffers announced per direction on one link. On this side's table a
/// buffer whose withdrawal has not been sent yet still takes a slot.
pub const MAX_LOCAL_MAPS: usize = 64;

/// `Invalid`: `whose` buffer `m` overlaps buffer `e`, both named by id and range.
fn overlap(whose: &str, m: &LocalMap, e: &LocalMap) -> Status {
    status!(
        Invalid,
        "{whose}buffer {:#x} at {:#x}+{:#x} overlaps {whose}buffer {:#x} at {:#x}+{:#x}",
        m.id,
        m.base,
        m.len,
        e.id,
        e.base,
        e.len
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
}

/// This side's buffers, announced or about to be.
#[derive(Default)]
pub(super) struct OutMaps {
    entries: heapless::Vec<(LocalMap, Out), MAX_LOCAL_MAPS>,
}

impl OutMaps {
    /// Queues the announcement of `m`. `Invalid` for a withdrawal-shaped
    /// (empty), null or wrapping range, an id in use (announced or still
    /// being withdrawn) or a range overlapping an announced buffer;
    /// `NotReady` when every slot is taken.
    pub(super) fn announce(&mut self, m: LocalMap) -> Result<()> {
        if m.len == 0 {
            return Err(status!(Invalid, "buffer {:#x} of 0 bytes", m.id));
        }
        if m.base == 0 || m.end().is_none() {
            return Err(status!(
                Invalid,
                "buffer {:#x} at {:#x}+{:#x}: null or wrapping range",
                m.id,
                m.base,
                m.len
            ));
        }
        if self.entries.iter().any(|(e, _)| e.id == m.id) {
            return Err(status!(
                Invalid,
                "buffer id {:#x} is announced or still being withdrawn",
                m.id
            ));
        }
        let live = |(e, st): &&(LocalMap, Out)| *st != Out::WithdrawUnsent && e.overlaps(&m);
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
        let Some(i) = self
            .entries
            .iter()
            .position(|(e, st)| e.id == id && *st != Out::WithdrawUnsent)
        else {
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
        self.entries
            .iter()
            .any(|(e, st)| e.id == id && *st != Out::WithdrawUnsent)
    }

    /// The next `LocalMap` frame due: every withdrawal goes before any
    /// announcement, so that the peer has freed a range before it hears of
    /// a new buffer there.
    pub(super) fn next_due(&self) -> Option<LocalMap> {
        let due = |want: Out| self.entries.iter().find(|(_, st)| *st == want);
        if let Some((e, _)) = due(Out::WithdrawUnsent) {
            return Some(LocalMap::withdraw(e.id));
        }
        due(Out::AnnounceUnsent).map(|(e, _)| *e)
    }

    /// Records that `frame` (from [`next_due`](Self::next_due)) was sent.
    pub(super) fn sent(&mut self, frame: LocalMap) {
        let Some(i) = self.entries.iter().position(|(e, _)| e.id == frame.id) else {
            return;
        };
        if frame.is_withdraw() {
            self.entries.swap_remove(i);
        } else {
            self.entries[i].1 = Out::Announced;
        }
    }

    /// Forgets everything (the link closed).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// The peer's announced buffers.
#[derive(Default)]
pub(super) struct InMaps {
    entries: heapless::Vec<LocalMap, MAX_LOCAL_MAPS>,
}

impl InMaps {
    /// Applies the peer's `LocalMap` (already checked by the decoder). The
    /// error, a protocol violation, names the bad value.
    pub(super) fn apply(&mut self, m: LocalMap) -> core::result::Result<(), Status> {
        if m.is_withdraw() {
            let i = self.entries.iter().position(|e| e.id == m.id).ok_or_else(|| {
                status!(
                    Invalid,
                    "peer withdrew buffer {:#x}, which it never announced",
                    m.id
                )
            })?;
            self.entries.swap_remove(i);
            return Ok(());
        }
        if self.entries.iter().any(|e| e.id == m.id) {
            return Err(status!(Invalid, "peer announced buffer {:#x} twice", m.id));
        }
        if let Some(e) = self.entries.iter().find(|e| e.overlaps(&m)) {
            return Err(overlap("peer's ", &m, e));
        }
        self.entries.push(m).map_err(|_| {
            status!(
                Invalid,
                "peer announced buffer {:#x} beyond the limit of {MAX_LOCAL_MAPS}",
                m.id
            )
        })
    }

    /// The buffer holding all of `[addr, addr + len)`, if any.
    pub(super) fn find(&self, addr: u64, len: u64) -> Option<LocalMap> {
        self.entries.iter().find(|e| e.contains(addr, len)).copied()
    }

    /// Every buffer, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = LocalMap> + '_ {
        self.entries.iter().copied()
    }

    /// Forgets everything (the link closed).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

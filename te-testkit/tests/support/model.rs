//! The reference model of one node: what its memory must hold, which
//! regions it registered, and which byte ranges transfers hold.

use te_proto::Perm;
use te_testkit::fabric::ConnId;

/// Identifies a task: initiating node, batch id, index in the batch.
pub type TaskKey = (usize, u64, u32);

/// A region as the workload registered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelRegion {
    pub base: u64,
    pub len: u64,
    pub perm: Perm,
    /// Unregister answered `Draining`: still held until its last pin goes.
    pub draining: bool,
}

impl ModelRegion {
    fn holds(&self, start: u64, end: u64) -> bool {
        self.base <= start && end <= self.base + self.len
    }
}

/// Who holds a byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A running task (its local or remote range).
    Task(TaskKey),
    /// Data of a completed batch whose notification has not arrived yet.
    Note(u64),
    /// What a failed task may still touch while its connection lives
    /// (answers and writes already on the wire).
    Quarantine(ConnId),
}

/// A held range `[start, end)`. An exclusive hold is the only one on its
/// bytes (they are being written); shared ones may overlap (being read).
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    pub start: u64,
    pub end: u64,
    pub exclusive: bool,
    pub owner: Owner,
}

pub struct NodeModel {
    pub base: u64,
    /// Expected contents; `None` where a failed transfer left them unknown.
    pub mem: Vec<Option<u8>>,
    pub regions: Vec<ModelRegion>,
    pub holds: Vec<Hold>,
    /// Registrations and unregistrations so far: a task's view of the
    /// target's regions is exact only while these do not move.
    pub registers: u64,
    pub unregisters: u64,
}

impl NodeModel {
    pub fn new(base: u64, bytes: &[u8]) -> NodeModel {
        NodeModel {
            base,
            mem: bytes.iter().map(|&b| Some(b)).collect(),
            regions: Vec::new(),
            holds: Vec::new(),
            registers: 0,
            unregisters: 0,
        }
    }

    /// Offsets of `[addr, addr + len)` in the arena, `None` outside.
    pub fn offsets(&self, addr: u64, len: u64) -> Option<core::ops::Range<usize>> {
        let start = addr.checked_sub(self.base)?;
        let end = start.checked_add(len)?;
        (end <= self.mem.len() as u64).then_some(start as usize..end as usize)
    }

    pub fn expected(&self, addr: u64, len: u64) -> Option<&[Option<u8>]> {
        self.offsets(addr, len).map(|r| &self.mem[r])
    }

    pub fn set(&mut self, addr: u64, vals: &[Option<u8>]) {
        if let Some(r) = self.offsets(addr, vals.len() as u64) {
            self.mem[r].copy_from_slice(vals);
        }
    }

    pub fn forget(&mut self, addr: u64, len: u64) {
        if let Some(r) = self.offsets(addr, len) {
            self.mem[r].fill(None);
        }
    }

    /// Whether a new hold on `[start, end)` conflicts with none held.
    pub fn free_for(&self, start: u64, end: u64, exclusive: bool) -> bool {
        !self
            .holds
            .iter()
            .any(|h| (exclusive || h.exclusive) && h.start < end && start < h.end)
    }

    /// Whether any hold touches `[start, end)`.
    pub fn held(&self, start: u64, end: u64) -> bool {
        !self.free_for(start, end, true)
    }

    pub fn hold(&mut self, start: u64, end: u64, exclusive: bool, owner: Owner) {
        self.holds.push(Hold {
            start,
            end,
            exclusive,
            owner,
        });
    }

    pub fn release(&mut self, owner: Owner) {
        self.holds.retain(|h| h.owner != owner);
    }

    /// Whether one hold (an exclusive one if `exclusive`) covers `[start, end)`.
    pub fn covered(&self, start: u64, end: u64, exclusive: bool) -> bool {
        self.holds
            .iter()
            .any(|h| (h.exclusive || !exclusive) && h.start <= start && end <= h.end)
    }

    /// Whether a peer may do `need` on all of `[start, end)`: one region,
    /// not draining, with that permission.
    pub fn remote_ok(&self, start: u64, end: u64, need: Perm) -> bool {
        start < end
            && self
                .regions
                .iter()
                .any(|r| !r.draining && r.holds(start, end) && r.perm.contains(need) && !r.perm.is_empty())
    }

    /// Whether `[start, end)` may be the local side of a new transfer.
    pub fn local_ok(&self, start: u64, end: u64) -> bool {
        start < end && self.regions.iter().any(|r| !r.draining && r.holds(start, end))
    }

    /// Whether `[start, end)` lies in a region still registered (draining
    /// ones included).
    pub fn registered(&self, start: u64, end: u64) -> bool {
        self.regions.iter().any(|r| r.holds(start, end))
    }

    /// Whether `[start, end)` overlaps a region (draining ones included).
    pub fn overlaps_region(&self, start: u64, end: u64) -> bool {
        self.regions
            .iter()
            .any(|r| r.base < end && start < r.base + r.len)
    }
}

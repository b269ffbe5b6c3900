//! The memory-registration table: which regions this process registered, in
//! which location, with which permissions, and how many transfers in flight
//! pin each of them.
//!
//! The table lives in storage the caller provides (an array, a boxed slice or
//! a borrowed slice of [`Entry`]); it never allocates. Entries are kept sorted
//! by `(location, base)` in a prefix of the storage, so every lookup is a
//! binary search; registering and unregistering shift the entries behind the
//! insertion point.
//!
//! Regions of one location never overlap; the same addresses may be
//! registered in different locations (a host address and a device address are
//! different memory).
//!
//! A transfer pins the region it uses ([`Registry::pin_local`],
//! [`Registry::pin_remote`]) and unpins it when it ends. Unregistering a
//! pinned region does not remove it at once: the region starts *draining*,
//! refuses new lookups and pins, still blocks overlapping registrations, and
//! is removed by the [`Registry::unpin`] that drops its last pin. So after
//! an unregister has taken effect no new transfer touches that memory, and the
//! ones in flight finish first.
//!
//! # Example
//!
//! ```
//! use te_proto::registry::{Entry, Registry, Unregister};
//! use te_proto::{ErrorCode, Location, Perm, Region, Span};
//!
//! let mut reg = Registry::new([Entry::EMPTY; 8]);
//! reg.register(Region::new(0x1000, 0x1000, Location::Cpu, Perm::REMOTE_READ))?;
//!
//! // A peer may read inside the region, but not write it, nor read past its end.
//! assert!(reg.check_remote(0x1800, 0x100, Some(Location::Cpu), Perm::REMOTE_READ).is_ok());
//! let e = reg.check_remote(0x1800, 0x100, None, Perm::REMOTE_WRITE).unwrap_err();
//! assert_eq!(e.code(), ErrorCode::NotAuthorized);
//! let e = reg.check_remote(0x1f00, 0x200, None, Perm::REMOTE_READ).unwrap_err();
//! assert_eq!(e.code(), ErrorCode::NotAuthorized);
//!
//! // A transfer in flight pins the region, so unregistering it drains it.
//! let key = reg.pin_local(Span::cpu(0x1000, 0x10))?;
//! assert_eq!(reg.unregister(Location::Cpu, 0x1000)?, Unregister::Draining { pins: 1 });
//! let e = reg.lookup_local(Span::cpu(0x1000, 0x10)).unwrap_err();
//! assert_eq!(e.code(), ErrorCode::NotFound);
//! // The last unpin removes it.
//! assert!(reg.unpin(key).is_some());
//! assert!(reg.is_empty());
//! # Ok::<(), te_proto::Status>(())
//! ```

use core::cell::Cell;
use core::fmt;

use crate::error::{Result, Status};
use crate::location::Location;
use crate::region::{Perm, Region, Span};
use crate::status;

/// One slot of registry storage. Callers only create empty ones
/// ([`Entry::EMPTY`]) and hand them to [`Registry::new`] as any
/// `S: AsRef<[Entry]> + AsMut<[Entry]>`: `[Entry::EMPTY; N]`, a `Box<[Entry]>`
/// (for example `vec![Entry::EMPTY; n].into_boxed_slice()`) or a `&mut [Entry]`.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    region: Region,
    pins: u32,
    draining: bool,
    /// The rkey the RDMA NIC checks for the region, once the shell
    /// registered it with the driver ([`Registry::set_rkey`]).
    rkey: Option<u32>,
}

impl Entry {
    /// An unused slot.
    pub const EMPTY: Entry = Entry {
        region: Region::new(0, 0, Location::Cpu, Perm::LOCAL_ONLY),
        pins: 0,
        draining: false,
        rkey: None,
    };

    const fn live(region: Region) -> Entry {
        Entry {
            region,
            pins: 0,
            draining: false,
            rkey: None,
        }
    }

    fn key(&self) -> (Location, u64) {
        (self.region.span.location, self.region.span.addr)
    }

    fn location(&self) -> Location {
        self.region.span.location
    }

    fn base(&self) -> u64 {
        self.region.span.addr
    }

    /// One past the last byte. Registered regions never wrap (register checks
    /// it); saturating keeps even a corrupted entry from panicking.
    fn end(&self) -> u64 {
        self.region.span.addr.saturating_add(self.region.span.len)
    }

    /// Visible to peers: remote permission and not draining.
    fn is_remote_visible(&self) -> bool {
        !self.draining && !self.region.perm.is_empty()
    }
}

impl Default for Entry {
    fn default() -> Entry {
        Entry::EMPTY
    }
}

/// Identifies a pinned region: its location and base address. Pass it back
/// to [`Registry::unpin`] when the transfer that pinned the region ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PinKey {
    /// Location of the pinned region.
    pub location: Location,
    /// Base address of the pinned region.
    pub base: u64,
}

/// Outcome of a successful [`Registry::unregister`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unregister {
    /// The region was not pinned and is gone.
    Removed(Region),
    /// The region is pinned by transfers in flight. It refuses new lookups and
    /// pins from now on and is removed by the [`Registry::unpin`] that drops
    /// its last pin (that call returns the region).
    Draining {
        /// Pins still held when the region started draining.
        pins: u32,
    },
}

/// The registration table over caller-provided storage `S`; see the
/// [module documentation](self).
///
/// Its capacity is the storage length. Every operation is bounded: lookups
/// are binary searches (after a look at the entry the last one found),
/// register and unregister shift at most `len` entries. It is `Send` but not
/// `Sync`: lookups through `&self` update that hint, so threads share a
/// registry behind a lock, as they share a link.
#[derive(Clone)]
pub struct Registry<S> {
    storage: S,
    len: usize,
    /// The index of the entry the last lookup found. Transfers tend to hit
    /// the same region again, and a hit skips the binary search (over a
    /// large table, a cache miss per step). Checked against the entry's
    /// content before use, so a stale index (after an insert or a removal)
    /// only misses.
    hint: Cell<usize>,
}

impl<S: AsRef<[Entry]>> fmt::Debug for Registry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.len)
            .field("capacity", &self.storage.as_ref().len())
            .finish()
    }
}

/// Why a remote range is not accessible in one location.
#[derive(Clone, Copy)]
enum Miss {
    /// No region of the location touches the range.
    Unregistered,
    /// The range starts or ends outside the region it touches.
    Partial(Region),
    /// The range runs from one region into the adjacent next one.
    Spanning(Region, Region),
    /// The region is being unregistered.
    Draining(Region),
    /// The region has no remote permission.
    LocalOnly(Region),
}

impl<S: AsRef<[Entry]> + AsMut<[Entry]>> Registry<S> {
    /// An empty registry over `storage`; its capacity is the storage length.
    /// Whatever the storage holds is ignored and overwritten as regions come.
    pub fn new(storage: S) -> Self {
        Registry {
            storage,
            len: 0,
            hint: Cell::new(0),
        }
    }

    /// The most regions the registry can hold (the storage length).
    pub fn capacity(&self) -> usize {
        self.storage.as_ref().len()
    }

    /// Number of regions held, draining ones included.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when no region is held (not even a draining one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every region held, draining ones included, sorted by
    /// `(location, base)`.
    pub fn regions(&self) -> impl Iterator<Item = Region> + '_ {
        self.entries().iter().map(|e| e.region)
    }

    /// Registers `region`.
    ///
    /// Errors: `Invalid` for address 0, length 0, a range that wraps the
    /// address space, or an overlap with a region (draining ones included)
    /// already registered in the same location; `RuntimeError` when the
    /// table is full.
    pub fn register(&mut self, region: Region) -> Result<()> {
        let Span { addr, len, location } = region.span;
        if addr == 0 {
            return Err(status!(
                Invalid,
                "register in {location}: address is 0 (len {len:#x})"
            ));
        }
        if len == 0 {
            return Err(status!(
                Invalid,
                "register in {location}: length is 0 at {addr:#x}"
            ));
        }
        let Some(end) = addr.checked_add(len) else {
            return Err(status!(
                Invalid,
                "register in {location}: {} wraps the address space",
                Range::new(addr, len)
            ));
        };
        let entries = self.entries();
        let idx = entries.partition_point(|e| e.key() < (location, addr));
        let prev = idx.checked_sub(1).and_then(|p| entries.get(p));
        let next = entries.get(idx);
        for other in [prev, next].into_iter().flatten() {
            if other.location() == location && other.base() < end && addr < other.end() {
                return Err(status!(
                    Invalid,
                    "register {} overlaps registered {} in {location}",
                    Range::new(addr, len),
                    Range::of(&other.region)
                ));
            }
        }
        self.insert_at(idx, region)
    }

    /// Registers every region of `regions`, or none of them.
    ///
    /// Errors: `Invalid` for an empty slice; otherwise the error of the first
    /// member that [`register`](Self::register) refuses (an overlap with an
    /// earlier member of the batch included), with the member's index in the
    /// message. On error the registry is as it was before the call.
    pub fn register_batch(&mut self, regions: &[Region]) -> Result<()> {
        if regions.is_empty() {
            return Err(status!(Invalid, "register_batch: empty list of regions"));
        }
        for (i, region) in regions.iter().enumerate() {
            if let Err(e) = self.register(*region) {
                // Members 0..i were registered by this call and nothing pinned
                // them since: removing them restores the previous table.
                for done in regions.get(..i).unwrap_or(&[]) {
                    if let Some(j) = self.exact(done.span.location, done.span.addr) {
                        self.remove_at(j);
                    }
                }
                return Err(Status::with_args(
                    e.code(),
                    format_args!("batch member {i}: {}", e.message()),
                ));
            }
        }
        Ok(())
    }

    /// Unregisters the region with base address `base` in `location`.
    ///
    /// An unpinned region is removed ([`Unregister::Removed`]); a pinned one
    /// starts draining ([`Unregister::Draining`]) and is removed by its last
    /// [`unpin`](Self::unpin).
    ///
    /// Errors: `NotFound` when no region has exactly that base in that
    /// location, or when it is already draining.
    pub fn unregister(&mut self, location: Location, base: u64) -> Result<Unregister> {
        let Some(idx) = self.exact(location, base) else {
            let entries = self.entries();
            return Err(match containing(entries, &self.hint, location, base) {
                Some((_, e)) => status!(
                    NotFound,
                    "unregister: {base:#x} in {location} is inside region {}, not its base",
                    Range::of(&e.region)
                ),
                None => status!(
                    NotFound,
                    "unregister: no region with base {base:#x} in {location}"
                ),
            });
        };
        let Some(entry) = self.entry_mut(idx) else {
            return Err(status!(
                NotFound,
                "unregister: no region with base {base:#x} in {location}"
            ));
        };
        if entry.draining {
            return Err(status!(
                NotFound,
                "unregister: region {base:#x} in {location} is already being unregistered"
            ));
        }
        if entry.pins > 0 {
            entry.draining = true;
            return Ok(Unregister::Draining { pins: entry.pins });
        }
        match self.remove_at(idx) {
            Some(region) => Ok(Unregister::Removed(region)),
            None => Err(status!(
                NotFound,
                "unregister: no region with base {base:#x} in {location}"
            )),
        }
    }

    /// The region that holds all of `span`, the local side of a transfer,
    /// without pinning it. Any permission does, local only included.
    ///
    /// Errors: `Invalid` for a zero-length or wrapping span; `NotFound` when
    /// no single region of `span.location` holds the whole span or that
    /// region is draining.
    pub fn lookup_local(&self, span: Span) -> Result<Region> {
        let idx = self.find_local(span)?;
        self.region_at(idx)
    }

    /// The region a peer may access for `need` at `[addr, addr + len)`,
    /// without pinning it. `location: None` resolves the address across all
    /// locations.
    ///
    /// Errors: `NotAuthorized`, with the reason in the message, unless the
    /// whole range lies inside one non-draining region with remote permission
    /// containing `need`; that covers a zero length, a wrapping range, a range
    /// never registered, partly outside a region, spanning two regions,
    /// unregistered or draining, local only, wrong permission, and (with
    /// `None`) a range held by regions in two locations (ambiguous).
    pub fn check_remote(
        &self,
        addr: u64,
        len: u64,
        location: Option<Location>,
        need: Perm,
    ) -> Result<Region> {
        let idx = self.find_remote(addr, len, location, need)?;
        self.region_at(idx)
    }

    /// Like [`lookup_local`](Self::lookup_local), and pins the region.
    ///
    /// Errors: those of `lookup_local`; `NotReady` when the region already
    /// holds `u32::MAX` pins.
    pub fn pin_local(&mut self, span: Span) -> Result<PinKey> {
        let idx = self.find_local(span)?;
        self.pin_at(idx)
    }

    /// Like [`check_remote`](Self::check_remote), and pins the region.
    ///
    /// Errors: those of `check_remote`; `NotReady` when the region already
    /// holds `u32::MAX` pins.
    pub fn pin_remote(
        &mut self,
        addr: u64,
        len: u64,
        location: Option<Location>,
        need: Perm,
    ) -> Result<PinKey> {
        let idx = self.find_remote(addr, len, location, need)?;
        self.pin_at(idx)
    }

    /// Drops one pin of the region `key` names. Returns `Some(region)` when
    /// the region was draining and this was its last pin: it is now removed.
    /// Returns `None` otherwise, also (doing nothing) for a key that names no
    /// region or a region without pins.
    pub fn unpin(&mut self, key: PinKey) -> Option<Region> {
        let idx = self.exact(key.location, key.base)?;
        let entry = self.entry_mut(idx)?;
        entry.pins = entry.pins.checked_sub(1)?;
        if entry.pins == 0 && entry.draining {
            self.remove_at(idx)
        } else {
            None
        }
    }

    /// The region with base `base` in `location` (draining ones included).
    pub fn region(&self, location: Location, base: u64) -> Option<Region> {
        let idx = self.exact(location, base)?;
        self.entries().get(idx).map(|e| e.region)
    }

    /// Whether the region `key` pins has started draining.
    pub fn is_draining(&self, key: PinKey) -> bool {
        self.exact(key.location, key.base)
            .and_then(|idx| self.entries().get(idx))
            .is_some_and(|e| e.draining)
    }

    /// The pin count of the region with base `base` in `location` (draining
    /// regions included), or `None` when there is no such region.
    pub fn pins(&self, location: Location, base: u64) -> Option<u32> {
        let idx = self.exact(location, base)?;
        self.entries().get(idx).map(|e| e.pins)
    }

    /// Records the rkey under which the RDMA NIC serves the region with
    /// base `base` in `location`, sent with it in segment-info replies.
    /// `NotFound` without such a region, `Invalid` for a local-only one (no
    /// peer may reach it) or a draining one (its rkey is being revoked).
    pub fn set_rkey(&mut self, location: Location, base: u64, rkey: u32) -> Result<()> {
        let idx = self
            .exact(location, base)
            .ok_or_else(|| status!(NotFound, "no region at base {base:#x} on {location} for an rkey"))?;
        let entry = self
            .entry_mut(idx)
            .ok_or_else(|| status!(NotFound, "region slot {idx} missing"))?;
        if entry.region.perm.is_empty() || entry.draining {
            return Err(status!(
                Invalid,
                "region at {base:#x} on {location} is local only or draining: no rkey"
            ));
        }
        entry.rkey = Some(rkey);
        Ok(())
    }

    /// The rkey recorded for the region with base `base` in `location`.
    pub fn rkey(&self, location: Location, base: u64) -> Option<u32> {
        let idx = self.exact(location, base)?;
        self.entries().get(idx).and_then(|e| e.rkey)
    }

    /// The regions peers may see (remote permission, not draining), with
    /// their rkeys, sorted by `(location, base)`, starting strictly after
    /// the key `after` (`None`: from the first). For paged segment-info
    /// replies: pass the last key of one page to get the next.
    pub fn remote_regions_after(
        &self,
        after: Option<(Location, u64)>,
    ) -> impl Iterator<Item = (Region, Option<u32>)> + '_ {
        let entries = self.entries();
        let start = match after {
            None => 0,
            Some(key) => entries.partition_point(|e| e.key() <= key),
        };
        entries
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .filter(|e| e.is_remote_visible())
            .map(|e| (e.region, e.rkey))
    }

    // ---- internals ----

    /// The occupied prefix `[0, len)` of the storage.
    fn entries(&self) -> &[Entry] {
        let s = self.storage.as_ref();
        // `len <= s.len()` always holds for sane storage; a storage whose
        // length changed under us yields what it has instead of a panic.
        s.get(..self.len).unwrap_or(s)
    }

    fn entry_mut(&mut self, idx: usize) -> Option<&mut Entry> {
        let len = self.len;
        self.storage.as_mut().get_mut(..len)?.get_mut(idx)
    }

    fn region_at(&self, idx: usize) -> Result<Region> {
        match self.entries().get(idx) {
            Some(e) => Ok(e.region),
            None => Err(status!(RuntimeError, "registry entry {idx} vanished")),
        }
    }

    /// Index of the entry with exactly this key.
    fn exact(&self, location: Location, base: u64) -> Option<usize> {
        let entries = self.entries();
        let h = self.hint.get();
        if entries.get(h).is_some_and(|e| e.key() == (location, base)) {
            return Some(h);
        }
        let idx = entries
            .binary_search_by(|e| e.key().cmp(&(location, base)))
            .ok()?;
        self.hint.set(idx);
        Some(idx)
    }

    /// Inserts at `idx`, the sorted position, shifting the tail right.
    fn insert_at(&mut self, idx: usize, region: Region) -> Result<()> {
        let len = self.len;
        let s = self.storage.as_mut();
        let cap = s.len();
        if len >= cap {
            return Err(status!(RuntimeError, "registration table full (capacity {cap})"));
        }
        // idx <= len < cap, so the window [idx, len] exists and is non-empty.
        let Some(window) = s.get_mut(idx..=len) else {
            return Err(status!(RuntimeError, "registry storage changed size"));
        };
        window.rotate_right(1);
        if let Some(first) = window.first_mut() {
            *first = Entry::live(region);
        }
        // len < cap <= usize::MAX: no overflow.
        self.len = len.saturating_add(1);
        Ok(())
    }

    /// Removes the entry at `idx`, shifting the tail left.
    fn remove_at(&mut self, idx: usize) -> Option<Region> {
        let len = self.len;
        let window = self.storage.as_mut().get_mut(idx..len)?;
        let region = window.first()?.region;
        window.rotate_left(1);
        if let Some(last) = window.last_mut() {
            *last = Entry::EMPTY;
        }
        // The window was non-empty, so len >= 1.
        self.len = len.saturating_sub(1);
        Some(region)
    }

    fn pin_at(&mut self, idx: usize) -> Result<PinKey> {
        let Some(entry) = self.entry_mut(idx) else {
            return Err(status!(RuntimeError, "registry entry {idx} vanished"));
        };
        let Some(pins) = entry.pins.checked_add(1) else {
            return Err(status!(
                NotReady,
                "region {} in {} already holds {} pins",
                Range::of(&entry.region),
                entry.location(),
                u32::MAX
            ));
        };
        entry.pins = pins;
        Ok(PinKey {
            location: entry.location(),
            base: entry.base(),
        })
    }

    fn find_local(&self, span: Span) -> Result<usize> {
        let Span { addr, len, location } = span;
        if len == 0 {
            return Err(status!(
                Invalid,
                "local span at {addr:#x} in {location} has length 0"
            ));
        }
        let Some(end) = span.end() else {
            return Err(status!(
                Invalid,
                "local span {} in {location} wraps the address space",
                Range::new(addr, len)
            ));
        };
        let range = Range::new(addr, len);
        match containing(self.entries(), &self.hint, location, addr) {
            None => Err(status!(
                NotFound,
                "local span {range} in {location} is not registered"
            )),
            Some((_, e)) if e.draining => Err(status!(
                NotFound,
                "local span {range} in {location}: region {:#x} is being unregistered",
                e.base()
            )),
            Some((_, e)) if end > e.end() => Err(status!(
                NotFound,
                "local span {range} in {location} runs past region {}",
                Range::of(&e.region)
            )),
            Some((idx, _)) => Ok(idx),
        }
    }

    fn find_remote(&self, addr: u64, len: u64, location: Option<Location>, need: Perm) -> Result<usize> {
        let place = Place(location);
        if len == 0 {
            return Err(status!(
                NotAuthorized,
                "remote range at {addr:#x} in {place} has length 0"
            ));
        }
        let Some(end) = addr.checked_add(len) else {
            return Err(status!(
                NotAuthorized,
                "remote range {} in {place} wraps the address space",
                Range::new(addr, len)
            ));
        };
        let range = Range::new(addr, len);
        let entries = self.entries();
        let found = match location {
            Some(loc) => remote_in(entries, &self.hint, loc, addr, end),
            None => {
                let mut found: Option<(usize, &Entry)> = None;
                let mut miss = Miss::Unregistered;
                let mut start = 0;
                // Visit each location present once, jumping over its block
                // with a binary search.
                while let Some(first) = entries.get(start) {
                    let loc = first.location();
                    match remote_in(entries, &self.hint, loc, addr, end) {
                        Ok(hit) => {
                            if let Some((_, prev)) = found {
                                return Err(status!(
                                    NotAuthorized,
                                    "remote range {range} is ambiguous: registered in {} and {loc}",
                                    prev.location()
                                ));
                            }
                            found = Some(hit);
                        }
                        Err(m) => {
                            if matches!(miss, Miss::Unregistered) {
                                miss = m;
                            }
                        }
                    }
                    let next = entries.partition_point(|e| e.location() <= loc);
                    if next <= start {
                        break; // unsorted storage; cannot happen
                    }
                    start = next;
                }
                found.ok_or(miss)
            }
        };
        let (idx, entry) = found.map_err(|miss| miss_status(miss, range, place))?;
        let perm = entry.region.perm;
        if !perm.contains(need) {
            return Err(status!(
                NotAuthorized,
                "remote range {range} in {}: region {:#x} allows {}, needs {}",
                entry.location(),
                entry.base(),
                perm_name(perm),
                perm_name(need)
            ));
        }
        Ok(idx)
    }
}

/// The entry of `location` whose region contains `addr`, if any; the
/// entry at `hint` is tried first (regions of one location never overlap,
/// so a containing entry is the only one) and a hit found otherwise
/// becomes the hint.
fn containing<'a>(
    entries: &'a [Entry],
    hint: &Cell<usize>,
    location: Location,
    addr: u64,
) -> Option<(usize, &'a Entry)> {
    let holds = |e: &Entry| e.location() == location && e.base() <= addr && addr < e.end();
    let h = hint.get();
    if let Some(e) = entries.get(h).filter(|e| holds(e)) {
        return Some((h, e));
    }
    let idx = entries
        .partition_point(|e| e.key() <= (location, addr))
        .checked_sub(1)?;
    let e = entries.get(idx).filter(|e| holds(e))?;
    hint.set(idx);
    Some((idx, e))
}

/// The entry of `location` peers may use for `[addr, end)` regardless of
/// permission bits, or why there is none.
fn remote_in<'a>(
    entries: &'a [Entry],
    hint: &Cell<usize>,
    location: Location,
    addr: u64,
    end: u64,
) -> core::result::Result<(usize, &'a Entry), Miss> {
    let Some((idx, e)) = containing(entries, hint, location, addr) else {
        let next = entries.partition_point(|e| e.key() <= (location, addr));
        return match entries.get(next) {
            Some(n) if n.location() == location && n.base() < end => Err(Miss::Partial(n.region)),
            _ => Err(Miss::Unregistered),
        };
    };
    if e.draining {
        return Err(Miss::Draining(e.region));
    }
    if end > e.end() {
        let next = entries.get(idx.saturating_add(1));
        return match next {
            Some(n) if n.location() == location && n.base() == e.end() => {
                Err(Miss::Spanning(e.region, n.region))
            }
            _ => Err(Miss::Partial(e.region)),
        };
    }
    if e.region.perm.is_empty() {
        return Err(Miss::LocalOnly(e.region));
    }
    Ok((idx, e))
}

fn miss_status(miss: Miss, range: Range, place: Place) -> Status {
    match miss {
        Miss::Unregistered => status!(NotAuthorized, "remote range {range} in {place} is not registered"),
        Miss::Partial(r) => status!(
            NotAuthorized,
            "remote range {range} partly outside region {} in {}",
            Range::of(&r),
            r.span.location
        ),
        Miss::Spanning(a, b) => status!(
            NotAuthorized,
            "remote range {range} spans regions {:#x} and {:#x} in {}",
            a.span.addr,
            b.span.addr,
            a.span.location
        ),
        Miss::Draining(r) => status!(
            NotAuthorized,
            "remote range {range} in {}: region {:#x} is being unregistered",
            r.span.location,
            r.span.addr
        ),
        Miss::LocalOnly(r) => status!(
            NotAuthorized,
            "remote range {range} in {}: region {:#x} is local only",
            r.span.location,
            r.span.addr
        ),
    }
}

fn perm_name(perm: Perm) -> &'static str {
    if perm == Perm::REMOTE_READ_WRITE {
        "read-write"
    } else if perm == Perm::REMOTE_READ {
        "read"
    } else if perm == Perm::REMOTE_WRITE {
        "write"
    } else if perm.is_empty() {
        "local only"
    } else {
        "unknown permission bits"
    }
}

/// `[start, end)` in hex, or `start+len` when the range wraps.
#[derive(Clone, Copy)]
struct Range {
    addr: u64,
    len: u64,
}

impl Range {
    fn new(addr: u64, len: u64) -> Range {
        Range { addr, len }
    }

    fn of(region: &Region) -> Range {
        Range::new(region.span.addr, region.span.len)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr.checked_add(self.len) {
            Some(end) => write!(f, "[{:#x}, {end:#x})", self.addr),
            None => write!(f, "{:#x}+{:#x}", self.addr, self.len),
        }
    }
}

/// A location, or "any location" for `None`.
#[derive(Clone, Copy)]
struct Place(Option<Location>);

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(loc) => fmt::Display::fmt(&loc, f),
            None => f.write_str("any location"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use std::boxed::Box;
    use std::vec;

    const CPU: Location = Location::Cpu;
    const SIM: Location = Location::Sim(0);
    const RW: Perm = Perm::REMOTE_READ_WRITE;
    const RD: Perm = Perm::REMOTE_READ;
    const WR: Perm = Perm::REMOTE_WRITE;

    fn new_reg() -> Registry<[Entry; 8]> {
        Registry::new([Entry::EMPTY; 8])
    }

    fn cpu(addr: u64, len: u64) -> Region {
        Region::new(addr, len, CPU, RW)
    }

    fn err<T: fmt::Debug>(r: Result<T>) -> Status {
        match r {
            Ok(v) => panic!("expected an error, got Ok({v:?})"),
            Err(e) => e,
        }
    }

    fn keys<S: AsRef<[Entry]> + AsMut<[Entry]>>(reg: &Registry<S>) -> std::vec::Vec<(Location, u64)> {
        reg.regions().map(|r| (r.span.location, r.span.addr)).collect()
    }

    // ---- register ----

    #[test]
    fn register_zero_address_is_invalid() {
        let mut reg = new_reg();
        let e = err(reg.register(cpu(0, 0x100)));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("address is 0"), "{e}");
        assert!(reg.is_empty());
    }

    #[test]
    fn register_zero_length_is_invalid() {
        let mut reg = new_reg();
        let e = err(reg.register(cpu(0x1000, 0)));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("0x1000"), "{e}");
        assert!(reg.is_empty());
    }

    #[test]
    fn register_wrapping_range_is_invalid() {
        let mut reg = new_reg();
        let e = err(reg.register(cpu(u64::MAX - 0xf, 0x20)));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("wraps"), "{e}");
        // Ending exactly at u64::MAX does not wrap.
        reg.register(cpu(u64::MAX - 0x10, 0x10)).unwrap();
    }

    #[test]
    fn register_overlap_same_location_is_invalid() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        for (addr, len) in [
            (0x1800, 0x1000),
            (0x800, 0x1000),
            (0x1000, 0x10),
            (0x100, 0x10000),
            (0x1fff, 1),
        ] {
            let e = err(reg.register(cpu(addr, len)));
            assert_eq!(e.code(), ErrorCode::Invalid, "{addr:#x}+{len:#x}");
            assert!(e.message().contains("[0x1000, 0x2000)"), "{e}");
        }
        let e = err(reg.register(cpu(0x1800, 0x1000)));
        assert!(e.message().contains("[0x1800, 0x2800)"), "{e}");
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn register_adjacent_regions_ok() {
        let mut reg = new_reg();
        reg.register(cpu(0x2000, 0x1000)).unwrap();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.register(cpu(0x3000, 0x1000)).unwrap();
        assert_eq!(keys(&reg), [(CPU, 0x1000), (CPU, 0x2000), (CPU, 0x3000)]);
    }

    #[test]
    fn register_overlap_with_draining_region_is_invalid() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.pin_local(Span::cpu(0x1000, 1)).unwrap();
        reg.unregister(CPU, 0x1000).unwrap();
        let e = err(reg.register(cpu(0x1000, 0x1000)));
        assert_eq!(e.code(), ErrorCode::Invalid);
    }

    #[test]
    fn register_same_range_other_location_ok() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.register(Region::new(0x1000, 0x1000, SIM, RW)).unwrap();
        reg.register(Region::new(0x1000, 0x1000, Location::Npu(1), RW))
            .unwrap();
        assert_eq!(
            keys(&reg),
            [(CPU, 0x1000), (SIM, 0x1000), (Location::Npu(1), 0x1000)]
        );
    }

    #[test]
    fn register_full_table_is_runtime_error() {
        let mut reg = Registry::new([Entry::EMPTY; 2]);
        reg.register(cpu(0x1000, 0x10)).unwrap();
        reg.register(cpu(0x2000, 0x10)).unwrap();
        let e = err(reg.register(cpu(0x3000, 0x10)));
        assert_eq!(e.code(), ErrorCode::RuntimeError);
        assert_eq!(e.message(), "registration table full (capacity 2)");
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn register_batch_empty_is_invalid() {
        let mut reg = new_reg();
        assert_eq!(err(reg.register_batch(&[])).code(), ErrorCode::Invalid);
    }

    #[test]
    fn register_batch_is_all_or_nothing() {
        let mut reg = new_reg();
        reg.register(cpu(0x5000, 0x1000)).unwrap();
        let batch = [
            cpu(0x1000, 0x10),
            cpu(0x2000, 0x10),
            cpu(0x5800, 0x10),
            cpu(0x6000, 0x10),
        ];
        let e = err(reg.register_batch(&batch));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().starts_with("batch member 2:"), "{e}");
        assert_eq!(keys(&reg), [(CPU, 0x5000)]);
        reg.register_batch(&batch[..2]).unwrap();
        assert_eq!(keys(&reg), [(CPU, 0x1000), (CPU, 0x2000), (CPU, 0x5000)]);
    }

    #[test]
    fn register_batch_member_overlap_rolls_back() {
        let mut reg = new_reg();
        let batch = [
            cpu(0x1000, 0x100),
            Region::new(0x1000, 0x100, SIM, RW),
            cpu(0x10f0, 0x100),
        ];
        let e = err(reg.register_batch(&batch));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().starts_with("batch member 2:"), "{e}");
        assert!(reg.is_empty());
    }

    #[test]
    fn register_batch_invalid_member_rolls_back() {
        let mut reg = new_reg();
        let e = err(reg.register_batch(&[cpu(0x1000, 0x100), cpu(0, 0x100)]));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().starts_with("batch member 1:"), "{e}");
        assert!(reg.is_empty());
    }

    #[test]
    fn register_batch_over_capacity_rolls_back() {
        let mut reg = Registry::new([Entry::EMPTY; 3]);
        reg.register(cpu(0x9000, 0x10)).unwrap();
        let e = err(reg.register_batch(&[cpu(0x1000, 0x10), cpu(0x2000, 0x10), cpu(0x3000, 0x10)]));
        assert_eq!(e.code(), ErrorCode::RuntimeError);
        assert!(e.message().starts_with("batch member 2:"), "{e}");
        assert!(e.message().contains("capacity 3"), "{e}");
        assert_eq!(keys(&reg), [(CPU, 0x9000)]);
    }

    // ---- unregister ----

    #[test]
    fn unregister_needs_exact_base() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        let e = err(reg.unregister(CPU, 0x1800));
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.message().contains("0x1800"), "{e}");
        assert_eq!(err(reg.unregister(CPU, 0x3000)).code(), ErrorCode::NotFound);
        assert_eq!(
            reg.unregister(CPU, 0x1000).unwrap(),
            Unregister::Removed(cpu(0x1000, 0x1000))
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn unregister_other_location_not_found() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        let e = err(reg.unregister(SIM, 0x1000));
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.message().contains("sim:0"), "{e}");
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn unregister_twice_not_found() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.unregister(CPU, 0x1000).unwrap();
        assert_eq!(err(reg.unregister(CPU, 0x1000)).code(), ErrorCode::NotFound);
    }

    #[test]
    fn unregister_draining_region_not_found() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.pin_local(Span::cpu(0x1000, 0x10)).unwrap();
        assert_eq!(
            reg.unregister(CPU, 0x1000).unwrap(),
            Unregister::Draining { pins: 1 }
        );
        let e = err(reg.unregister(CPU, 0x1000));
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.message().contains("already being unregistered"), "{e}");
    }

    #[test]
    fn region_by_base_includes_draining_ones_and_needs_the_exact_base() {
        let mut reg = new_reg();
        let region = cpu(0x1000, 0x1000);
        reg.register(region).unwrap();
        let pin = reg.pin_local(Span::cpu(0x1000, 0x10)).unwrap();
        assert_eq!(reg.region(CPU, 0x1000), Some(region));
        assert_eq!(reg.region(CPU, 0x1001), None, "not the base");
        reg.unregister(CPU, 0x1000).unwrap();
        assert!(reg.is_draining(pin));
        assert_eq!(reg.region(CPU, 0x1000), Some(region), "draining, still held");
        reg.unpin(pin);
        assert_eq!(reg.region(CPU, 0x1000), None, "removed by its last unpin");
    }

    #[test]
    fn pinned_region_drains_then_removes() {
        let mut reg = new_reg();
        let region = Region::new(0x1000, 0x1000, CPU, RD);
        reg.register(region).unwrap();
        let k1 = reg.pin_local(Span::cpu(0x1000, 0x10)).unwrap();
        let k2 = reg.pin_remote(0x1100, 0x10, None, RD).unwrap();
        assert_eq!(
            k1,
            PinKey {
                location: CPU,
                base: 0x1000
            }
        );
        assert_eq!(k1, k2);
        assert_eq!(reg.pins(CPU, 0x1000), Some(2));
        assert_eq!(
            reg.unregister(CPU, 0x1000).unwrap(),
            Unregister::Draining { pins: 2 }
        );
        // Draining: refuses lookups and pins, still listed, not offered to peers.
        assert_eq!(
            err(reg.lookup_local(Span::cpu(0x1000, 0x10))).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            err(reg.pin_local(Span::cpu(0x1000, 0x10))).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            err(reg.pin_remote(0x1000, 0x10, Some(CPU), RD)).code(),
            ErrorCode::NotAuthorized
        );
        assert_eq!(reg.remote_regions_after(None).count(), 0);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.unpin(k1), None);
        assert_eq!(reg.pins(CPU, 0x1000), Some(1));
        assert_eq!(reg.unpin(k2), Some(region));
        assert_eq!(reg.pins(CPU, 0x1000), None);
        assert!(reg.is_empty());
        // The address range is free again.
        reg.register(region).unwrap();
    }

    #[test]
    fn unpin_unknown_or_unpinned_is_noop() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        assert_eq!(
            reg.unpin(PinKey {
                location: CPU,
                base: 0x1000
            }),
            None
        );
        assert_eq!(
            reg.unpin(PinKey {
                location: SIM,
                base: 0x1000
            }),
            None
        );
        assert_eq!(reg.pins(CPU, 0x1000), Some(0));
        assert_eq!(
            reg.unregister(CPU, 0x1000).unwrap(),
            Unregister::Removed(cpu(0x1000, 0x1000))
        );
    }

    #[test]
    fn pin_count_overflow_is_not_ready() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.storage[0].pins = u32::MAX - 1;
        reg.pin_local(Span::cpu(0x1000, 1)).unwrap();
        let e = err(reg.pin_local(Span::cpu(0x1000, 1)));
        assert_eq!(e.code(), ErrorCode::NotReady);
        assert_eq!(
            err(reg.pin_remote(0x1000, 1, None, RD)).code(),
            ErrorCode::NotReady
        );
        assert_eq!(reg.pins(CPU, 0x1000), Some(u32::MAX));
    }

    // ---- local lookups ----

    #[test]
    fn local_zero_length_is_invalid() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        assert_eq!(
            err(reg.lookup_local(Span::cpu(0x1000, 0))).code(),
            ErrorCode::Invalid
        );
        assert_eq!(
            err(reg.pin_local(Span::cpu(0x1000, 0))).code(),
            ErrorCode::Invalid
        );
    }

    #[test]
    fn local_wrapping_span_is_invalid() {
        let reg = new_reg();
        let e = err(reg.lookup_local(Span::cpu(u64::MAX, 2)));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("wraps"), "{e}");
    }

    #[test]
    fn local_unregistered_not_found() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        let e = err(reg.lookup_local(Span::cpu(0x3000, 0x10)));
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.message().contains("[0x3000, 0x3010)"), "{e}");
        assert_eq!(
            err(reg.lookup_local(Span::cpu(0x800, 0x1000))).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            err(reg.lookup_local(Span::cpu(0x1800, 0x1000))).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            err(reg.pin_local(Span::cpu(0x1800, 0x1000))).code(),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn local_spanning_two_regions_not_found() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.register(cpu(0x2000, 0x1000)).unwrap();
        assert_eq!(
            err(reg.lookup_local(Span::cpu(0x1800, 0x1000))).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            reg.lookup_local(Span::cpu(0x1000, 0x1000)).unwrap(),
            cpu(0x1000, 0x1000)
        );
        assert_eq!(
            reg.lookup_local(Span::cpu(0x2fff, 1)).unwrap(),
            cpu(0x2000, 0x1000)
        );
    }

    #[test]
    fn local_other_location_not_found() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        let span = Span {
            addr: 0x1000,
            len: 0x10,
            location: SIM,
        };
        let e = err(reg.lookup_local(span));
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.message().contains("sim:0"), "{e}");
    }

    #[test]
    fn local_only_region_is_usable_locally() {
        let mut reg = new_reg();
        let region = Region::new(0x1000, 0x1000, CPU, Perm::LOCAL_ONLY);
        reg.register(region).unwrap();
        assert_eq!(reg.lookup_local(Span::cpu(0x1000, 0x1000)).unwrap(), region);
        let key = reg.pin_local(Span::cpu(0x1000, 0x1000)).unwrap();
        assert_eq!(reg.unpin(key), None);
    }

    // ---- remote checks ----

    #[test]
    fn remote_never_registered_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        let e = err(reg.check_remote(0x5000, 0x10, Some(CPU), RD));
        assert_eq!(e.code(), ErrorCode::NotAuthorized);
        assert!(
            e.message().contains("[0x5000, 0x5010)") && e.message().contains("cpu"),
            "{e}"
        );
        let e = err(reg.check_remote(0x5000, 0x10, None, RD));
        assert!(e.message().contains("any location"), "{e}");
        // The same range registered in another location does not count.
        assert_eq!(
            err(reg.check_remote(0x1000, 0x10, Some(SIM), RD)).code(),
            ErrorCode::NotAuthorized
        );
    }

    #[test]
    fn remote_partial_overlap_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        for (addr, len) in [(0x1800, 0x1000), (0x800, 0x1000), (0x800, 0x3000)] {
            let e = err(reg.check_remote(addr, len, Some(CPU), RD));
            assert_eq!(e.code(), ErrorCode::NotAuthorized);
            assert!(e.message().contains("partly outside"), "{e}");
            assert_eq!(
                err(reg.pin_remote(addr, len, None, RD)).code(),
                ErrorCode::NotAuthorized
            );
        }
        assert_eq!(reg.pins(CPU, 0x1000), Some(0));
    }

    #[test]
    fn remote_spanning_two_regions_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.register(cpu(0x2000, 0x1000)).unwrap();
        let e = err(reg.check_remote(0x1800, 0x1000, Some(CPU), RD));
        assert_eq!(e.code(), ErrorCode::NotAuthorized);
        assert!(e.message().contains("spans regions 0x1000 and 0x2000"), "{e}");
        assert_eq!(
            err(reg.check_remote(0x1800, 0x1000, None, RD)).code(),
            ErrorCode::NotAuthorized
        );
        assert!(reg.check_remote(0x1800, 0x800, None, RD).is_ok());
    }

    #[test]
    fn remote_after_unregister_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        assert!(reg.check_remote(0x1000, 0x10, Some(CPU), RD).is_ok());
        reg.unregister(CPU, 0x1000).unwrap();
        assert_eq!(
            err(reg.check_remote(0x1000, 0x10, Some(CPU), RD)).code(),
            ErrorCode::NotAuthorized
        );
        assert_eq!(
            err(reg.pin_remote(0x1000, 0x10, None, RD)).code(),
            ErrorCode::NotAuthorized
        );
    }

    #[test]
    fn remote_draining_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.pin_remote(0x1000, 0x10, Some(CPU), WR).unwrap();
        reg.unregister(CPU, 0x1000).unwrap();
        let e = err(reg.check_remote(0x1000, 0x10, Some(CPU), RD));
        assert_eq!(e.code(), ErrorCode::NotAuthorized);
        assert!(e.message().contains("being unregistered"), "{e}");
    }

    #[test]
    fn remote_wrong_permission_not_authorized() {
        let mut reg = new_reg();
        reg.register(Region::new(0x1000, 0x1000, CPU, RD)).unwrap();
        reg.register(Region::new(0x4000, 0x1000, CPU, WR)).unwrap();
        let e = err(reg.check_remote(0x1000, 0x10, Some(CPU), WR));
        assert_eq!(e.code(), ErrorCode::NotAuthorized);
        assert!(e.message().contains("allows read, needs write"), "{e}");
        assert_eq!(
            err(reg.check_remote(0x4000, 0x10, None, RD)).code(),
            ErrorCode::NotAuthorized
        );
        assert_eq!(
            err(reg.pin_remote(0x4000, 0x10, None, RW)).code(),
            ErrorCode::NotAuthorized
        );
        assert!(reg.check_remote(0x1000, 0x10, None, RD).is_ok());
        assert!(reg.check_remote(0x4000, 0x10, None, WR).is_ok());
    }

    #[test]
    fn remote_local_only_not_authorized() {
        let mut reg = new_reg();
        reg.register(Region::new(0x1000, 0x1000, CPU, Perm::LOCAL_ONLY))
            .unwrap();
        for need in [RD, WR, Perm::LOCAL_ONLY] {
            let e = err(reg.check_remote(0x1000, 0x10, Some(CPU), need));
            assert_eq!(e.code(), ErrorCode::NotAuthorized);
            assert!(e.message().contains("local only"), "{e}");
        }
        assert_eq!(reg.remote_regions_after(None).count(), 0);
    }

    #[test]
    fn remote_zero_length_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        assert_eq!(
            err(reg.check_remote(0x1000, 0, Some(CPU), RD)).code(),
            ErrorCode::NotAuthorized
        );
        assert_eq!(
            err(reg.pin_remote(0x1000, 0, None, RD)).code(),
            ErrorCode::NotAuthorized
        );
    }

    #[test]
    fn remote_wrapping_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(u64::MAX - 0x1000, 0x1000)).unwrap();
        let e = err(reg.check_remote(u64::MAX - 0x10, 0x20, Some(CPU), RD));
        assert_eq!(e.code(), ErrorCode::NotAuthorized);
        assert!(e.message().contains("wraps"), "{e}");
        assert_eq!(
            err(reg.check_remote(u64::MAX, u64::MAX, None, RD)).code(),
            ErrorCode::NotAuthorized
        );
    }

    #[test]
    fn remote_any_location_resolves_unique_region() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        let dev = Region::new(0x8000, 0x1000, SIM, RW);
        reg.register(dev).unwrap();
        reg.register(Region::new(0x8000, 0x1000, Location::Npu(2), Perm::LOCAL_ONLY))
            .unwrap();
        assert_eq!(reg.check_remote(0x8800, 0x10, None, WR).unwrap(), dev);
        let key = reg.pin_remote(0x8800, 0x10, None, WR).unwrap();
        assert_eq!(
            key,
            PinKey {
                location: SIM,
                base: 0x8000
            }
        );
        assert_eq!(reg.pins(SIM, 0x8000), Some(1));
    }

    #[test]
    fn remote_any_location_ambiguous_not_authorized() {
        let mut reg = new_reg();
        reg.register(cpu(0x1000, 0x1000)).unwrap();
        reg.register(Region::new(0x800, 0x1000, SIM, RD)).unwrap();
        let e = err(reg.check_remote(0x1000, 0x10, None, RD));
        assert_eq!(e.code(), ErrorCode::NotAuthorized);
        assert!(
            e.message().contains("ambiguous") && e.message().contains("cpu and sim:0"),
            "{e}"
        );
        // Naming the location resolves it; outside the overlap it is unique.
        assert!(reg.check_remote(0x1000, 0x10, Some(CPU), RD).is_ok());
        assert!(reg.check_remote(0x1900, 0x10, None, RD).is_ok());
    }

    // ---- listing ----

    #[test]
    fn remote_regions_after_pages_in_order() {
        let mut reg = new_reg();
        let regions = [
            Region::new(0x3000, 0x10, CPU, RW),
            Region::new(0x1000, 0x10, SIM, RD),
            Region::new(0x1000, 0x10, CPU, RW),
            Region::new(0x2000, 0x10, CPU, Perm::LOCAL_ONLY),
            Region::new(0x5000, 0x10, CPU, WR),
        ];
        reg.register_batch(&regions).unwrap();
        assert_eq!(
            keys(&reg),
            [
                (CPU, 0x1000),
                (CPU, 0x2000),
                (CPU, 0x3000),
                (CPU, 0x5000),
                (SIM, 0x1000)
            ]
        );
        let page = |after| {
            reg.remote_regions_after(after)
                .map(|(r, _)| (r.span.location, r.span.addr))
                .collect::<std::vec::Vec<_>>()
        };
        assert_eq!(
            page(None),
            [(CPU, 0x1000), (CPU, 0x3000), (CPU, 0x5000), (SIM, 0x1000)]
        );
        assert_eq!(
            page(Some((CPU, 0x1000))),
            [(CPU, 0x3000), (CPU, 0x5000), (SIM, 0x1000)]
        );
        assert_eq!(page(Some((CPU, 0x4000))), [(CPU, 0x5000), (SIM, 0x1000)]);
        assert_eq!(page(Some((CPU, u64::MAX))), [(SIM, 0x1000)]);
        assert_eq!(page(Some((SIM, 0x1000))), []);
    }

    #[test]
    fn works_over_borrowed_and_boxed_storage() {
        let mut slots = [Entry::EMPTY; 4];
        let mut reg = Registry::new(&mut slots[..]);
        assert_eq!(reg.capacity(), 4);
        reg.register(cpu(0x1000, 0x10)).unwrap();
        assert_eq!(reg.len(), 1);
        let mut boxed = Registry::new(vec![Entry::EMPTY; 3].into_boxed_slice());
        assert_eq!(boxed.capacity(), 3);
        boxed.register(cpu(0x1000, 0x10)).unwrap();
        let mut empty = Registry::new([Entry::EMPTY; 0]);
        assert_eq!(
            err(empty.register(cpu(0x1000, 0x10))).code(),
            ErrorCode::RuntimeError
        );
        assert_eq!(
            err(empty.check_remote(0x1000, 1, None, RD)).code(),
            ErrorCode::NotAuthorized
        );
    }

    #[test]
    fn hundred_thousand_regions_lookups() {
        const N: u64 = 100_000;
        const LOCS: u64 = 1_000; // 100 regions in each of 1000 locations
        let storage: Box<[Entry]> = vec![Entry::EMPTY; N as usize].into_boxed_slice();
        let mut reg = Registry::new(storage);
        let loc = |i: u64| {
            let l = i / (N / LOCS);
            if l == 0 {
                CPU
            } else {
                Location::Sim(l as u16)
            }
        };
        // Region i (k-th of location l): 0x1000 bytes with a gap of 0x1000
        // after each. Locations 2m and 2m+1 share an address window, offset
        // by 0x800, so their regions overlap pairwise.
        let addr = |i: u64| {
            let (l, k) = (i / (N / LOCS), i % (N / LOCS));
            0x10_0000 + (l / 2) * 0x20_0000 + (l % 2) * 0x800 + k * 0x2000
        };
        let perm = |i: u64| if i.is_multiple_of(7) { Perm::LOCAL_ONLY } else { RW };
        let batch: std::vec::Vec<Region> = (0..N)
            .map(|i| Region::new(addr(i), 0x1000, loc(i), perm(i)))
            .collect();
        for chunk in batch.chunks(10_000) {
            reg.register_batch(chunk).unwrap();
        }
        assert_eq!(reg.len(), N as usize);
        assert_eq!(err(reg.register(cpu(0x1, 1))).code(), ErrorCode::RuntimeError);
        for i in (0..N).step_by(97) {
            let r = Region::new(addr(i), 0x1000, loc(i), perm(i));
            let inside = Span {
                addr: addr(i) + 0x10,
                len: 0x100,
                location: loc(i),
            };
            assert_eq!(reg.lookup_local(inside).unwrap(), r);
            let gap = Span {
                addr: addr(i) + 0x1000,
                len: 0x10,
                location: loc(i),
            };
            assert_eq!(err(reg.lookup_local(gap)).code(), ErrorCode::NotFound);
            let remote = reg.check_remote(addr(i), 0x1000, Some(loc(i)), RW);
            if perm(i).is_empty() {
                assert_eq!(err(remote).code(), ErrorCode::NotAuthorized);
            } else {
                assert_eq!(remote.unwrap(), r);
            }
            // Unresolved location: [base + 0x7f0, base + 0x800) lies only in
            // region i for an even location, and also in the partner's
            // region (i - 100) for an odd one.
            let probe = reg.check_remote(addr(i) + 0x7f0, 0x10, None, RD);
            let odd = (i / (N / LOCS)) % 2 == 1;
            let visible = |j: u64| !perm(j).is_empty();
            let expect = match (visible(i), odd && visible(i - 100)) {
                (true, false) => Some(loc(i)),
                (false, true) => Some(loc(i - 100)),
                _ => None,
            };
            match expect {
                Some(l) => assert_eq!(probe.unwrap().span.location, l, "{i}"),
                None => assert_eq!(err(probe).code(), ErrorCode::NotAuthorized),
            }
        }
        // An address held by exactly one location resolves without naming it.
        let last = N - 1;
        let hi = addr(last) + 0xff0;
        assert_eq!(
            reg.check_remote(hi, 0x10, None, RD).unwrap().span.location,
            loc(last)
        );
        assert_eq!(
            reg.remote_regions_after(None).count(),
            (0..N).filter(|&i| !perm(i).is_empty()).count()
        );
        // Unregister every other region of one location, then look up again.
        for i in (0..100).step_by(2) {
            reg.unregister(CPU, addr(i)).unwrap();
        }
        assert_eq!(reg.len(), N as usize - 50);
        assert_eq!(
            err(reg.lookup_local(Span::cpu(addr(0), 1))).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            reg.lookup_local(Span::cpu(addr(1), 1)).unwrap().span.addr,
            addr(1)
        );
    }
}

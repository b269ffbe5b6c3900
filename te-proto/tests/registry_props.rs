//! Property test: the [`Registry`] against a reference model (a `Vec` of
//! regions searched linearly) over random sequences of operations in a small
//! address space, so that overlaps, adjacency, draining and a full table are
//! all frequent.

use proptest::prelude::*;
use proptest::sample::select;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use te_proto::registry::{Entry, PinKey, Registry, Unregister};
use te_proto::{ErrorCode, Location, Perm, Region, Span};

/// Small on purpose: the table fills up regularly.
const CAPACITY: usize = 6;

const LOCATIONS: [Location; 3] = [Location::Cpu, Location::Sim(0), Location::Npu(3)];
const PERMS: [Perm; 4] = [
    Perm::LOCAL_ONLY,
    Perm::REMOTE_READ,
    Perm::REMOTE_WRITE,
    Perm::REMOTE_READ_WRITE,
];
const NEEDS: [Perm; 3] = [Perm::REMOTE_READ, Perm::REMOTE_WRITE, Perm::REMOTE_READ_WRITE];

// ---------------------------------------------------------------------------
// Reference model

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelEntry {
    region: Region,
    pins: u32,
    draining: bool,
}

impl ModelEntry {
    fn location(&self) -> Location {
        self.region.span.location
    }
    fn base(&self) -> u64 {
        self.region.span.addr
    }
    fn end(&self) -> u64 {
        self.region.span.addr + self.region.span.len
    }
    fn holds(&self, addr: u64, end: u64) -> bool {
        self.base() <= addr && end <= self.end()
    }
}

/// The registry as the simplest thing that could work: an unordered vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    entries: Vec<ModelEntry>,
}

/// What an operation returned, with errors reduced to their code.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Unit(Result<(), ErrorCode>),
    Unregister(Result<Unregister, ErrorCode>),
    Region(Result<Region, ErrorCode>),
    Pin(Result<PinKey, ErrorCode>),
    Unpin(Option<Region>),
    Pins(Option<u32>),
    List(Vec<Region>),
}

impl Model {
    fn index(&self, location: Location, base: u64) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.location() == location && e.base() == base)
    }

    fn register(&mut self, region: Region) -> Result<(), ErrorCode> {
        let Span { addr, len, location } = region.span;
        if addr == 0 || len == 0 {
            return Err(ErrorCode::Invalid);
        }
        let end = addr.checked_add(len).ok_or(ErrorCode::Invalid)?;
        let overlaps = self
            .entries
            .iter()
            .any(|e| e.location() == location && e.base() < end && addr < e.end());
        if overlaps {
            return Err(ErrorCode::Invalid);
        }
        if self.entries.len() == CAPACITY {
            return Err(ErrorCode::RuntimeError);
        }
        self.entries.push(ModelEntry {
            region,
            pins: 0,
            draining: false,
        });
        Ok(())
    }

    fn register_batch(&mut self, regions: &[Region]) -> Result<(), ErrorCode> {
        if regions.is_empty() {
            return Err(ErrorCode::Invalid);
        }
        let mut next = self.clone();
        for r in regions {
            next.register(*r)?;
        }
        *self = next;
        Ok(())
    }

    fn unregister(&mut self, location: Location, base: u64) -> Result<Unregister, ErrorCode> {
        let i = self.index(location, base).ok_or(ErrorCode::NotFound)?;
        let e = &mut self.entries[i];
        if e.draining {
            Err(ErrorCode::NotFound)
        } else if e.pins > 0 {
            e.draining = true;
            Ok(Unregister::Draining { pins: e.pins })
        } else {
            Ok(Unregister::Removed(self.entries.remove(i).region))
        }
    }

    fn find_local(&self, span: Span) -> Result<usize, ErrorCode> {
        if span.len == 0 {
            return Err(ErrorCode::Invalid);
        }
        let end = span.end().ok_or(ErrorCode::Invalid)?;
        self.entries
            .iter()
            .position(|e| e.location() == span.location && !e.draining && e.holds(span.addr, end))
            .ok_or(ErrorCode::NotFound)
    }

    fn find_remote(
        &self,
        addr: u64,
        len: u64,
        location: Option<Location>,
        need: Perm,
    ) -> Result<usize, ErrorCode> {
        if len == 0 {
            return Err(ErrorCode::NotAuthorized);
        }
        let end = addr.checked_add(len).ok_or(ErrorCode::NotAuthorized)?;
        let candidates: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                location.is_none_or(|l| l == e.location())
                    && !e.draining
                    && !e.region.perm.is_empty()
                    && e.holds(addr, end)
            })
            .collect();
        match candidates[..] {
            [i] if self.entries[i].region.perm.contains(need) => Ok(i),
            _ => Err(ErrorCode::NotAuthorized),
        }
    }

    fn pin(&mut self, i: usize) -> Result<PinKey, ErrorCode> {
        let e = &mut self.entries[i];
        e.pins = e.pins.checked_add(1).ok_or(ErrorCode::NotReady)?;
        Ok(PinKey {
            location: e.location(),
            base: e.base(),
        })
    }

    fn unpin(&mut self, key: PinKey) -> Option<Region> {
        let i = self.index(key.location, key.base)?;
        let e = &mut self.entries[i];
        if e.pins == 0 {
            return None;
        }
        e.pins -= 1;
        if e.pins == 0 && e.draining {
            Some(self.entries.remove(i).region)
        } else {
            None
        }
    }

    fn sorted(&self) -> Vec<ModelEntry> {
        let mut v = self.entries.clone();
        v.sort_by_key(|e| (e.location(), e.base()));
        v
    }

    fn remote_regions_after(&self, after: Option<(Location, u64)>) -> Vec<Region> {
        self.sorted()
            .into_iter()
            .filter(|e| !e.draining && !e.region.perm.is_empty())
            .filter(|e| after.is_none_or(|k| (e.location(), e.base()) > k))
            .map(|e| e.region)
            .collect()
    }

    /// Applies `op` and returns what the registry must return for it.
    fn step(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Register(r) => Outcome::Unit(self.register(*r)),
            Op::RegisterBatch(rs) => Outcome::Unit(self.register_batch(rs)),
            Op::Unregister(l, b) => Outcome::Unregister(self.unregister(*l, *b)),
            Op::LookupLocal(s) => Outcome::Region(self.find_local(*s).map(|i| self.entries[i].region)),
            Op::CheckRemote(a, n, l, p) => {
                Outcome::Region(self.find_remote(*a, *n, *l, *p).map(|i| self.entries[i].region))
            }
            Op::PinLocal(s) => Outcome::Pin(self.find_local(*s).and_then(|i| self.pin(i))),
            Op::PinRemote(a, n, l, p) => {
                Outcome::Pin(self.find_remote(*a, *n, *l, *p).and_then(|i| self.pin(i)))
            }
            Op::Unpin(k) => Outcome::Unpin(self.unpin(*k)),
            Op::Pins(l, b) => Outcome::Pins(self.index(*l, *b).map(|i| self.entries[i].pins)),
            Op::RemoteRegionsAfter(after) => Outcome::List(self.remote_regions_after(*after)),
        }
    }
}

// ---------------------------------------------------------------------------
// Operations and their generation

#[derive(Clone, Debug)]
enum Op {
    Register(Region),
    RegisterBatch(Vec<Region>),
    Unregister(Location, u64),
    LookupLocal(Span),
    CheckRemote(u64, u64, Option<Location>, Perm),
    PinLocal(Span),
    PinRemote(u64, u64, Option<Location>, Perm),
    Unpin(PinKey),
    Pins(Location, u64),
    RemoteRegionsAfter(Option<(Location, u64)>),
}

/// Mostly a tiny address space (frequent overlaps), sometimes the top of the
/// address space (wrapping) and sometimes 0.
fn addr() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        12 => 1u64..48,
        1 => Just(0u64),
        1 => (u64::MAX - 20)..=u64::MAX,
    ]
}

fn len() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        12 => 1u64..10,
        1 => Just(0u64),
        1 => Just(u64::MAX),
    ]
}

fn location() -> impl Strategy<Value = Location> + Clone {
    select(&LOCATIONS[..])
}

fn region() -> impl Strategy<Value = Region> + Clone {
    (addr(), len(), location(), select(&PERMS[..])).prop_map(|(a, n, l, p)| Region::new(a, n, l, p))
}

fn span() -> impl Strategy<Value = Span> + Clone {
    (addr(), len(), location()).prop_map(|(addr, len, location)| Span { addr, len, location })
}

/// A key that names a region the model holds, or (if it holds none, or by
/// chance) an arbitrary one.
fn key(model: &Model) -> BoxedStrategy<(Location, u64)> {
    let random = (location(), addr());
    if model.entries.is_empty() {
        return random.boxed();
    }
    let known: Vec<(Location, u64)> = model.entries.iter().map(|e| (e.location(), e.base())).collect();
    prop_oneof![3 => select(known), 1 => random].boxed()
}

/// A key of a region the model holds with pins, else any key.
fn pinned_key(model: &Model) -> BoxedStrategy<(Location, u64)> {
    let pinned: Vec<(Location, u64)> = model
        .entries
        .iter()
        .filter(|e| e.pins > 0)
        .map(|e| (e.location(), e.base()))
        .collect();
    if pinned.is_empty() {
        return key(model);
    }
    prop_oneof![3 => select(pinned), 1 => key(model)].boxed()
}

/// A range in a location, mostly inside (or sticking out of) a region the
/// model holds, so that lookups succeed often enough to matter.
fn near_range(model: &Model) -> BoxedStrategy<(Location, u64, u64)> {
    let random = (location(), addr(), len());
    if model.entries.is_empty() {
        return random.boxed();
    }
    let regions: Vec<Span> = model.entries.iter().map(|e| e.region.span).collect();
    let near = (select(regions), 0u64..4, 0u64..5).prop_map(|(span, skip, trim)| {
        // `trim` 4 makes the range stick out past the region's end.
        let a = span.addr + skip.min(span.len - 1);
        let room = span.addr + span.len - a;
        let n = if trim == 4 {
            room + 1
        } else {
            room.saturating_sub(trim).max(1)
        };
        (span.location, a, n)
    });
    prop_oneof![3 => near, 1 => random].boxed()
}

struct RegistryModel;

impl ReferenceStateMachine for RegistryModel {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let k = key(state);
        let near = near_range(state);
        // Remote ranges name their location two times in three.
        let remote = (near.clone(), 0u8..3, select(&NEEDS[..])).prop_map(|((l, a, n), pick, p)| {
            let location = (pick > 0).then_some(l);
            (a, n, location, p)
        });
        let local = near.prop_map(|(location, addr, len)| Span { addr, len, location });
        prop_oneof![
            8 => region().prop_map(Op::Register),
            2 => proptest::collection::vec(region(), 0..4).prop_map(Op::RegisterBatch),
            3 => k.clone().prop_map(|(l, b)| Op::Unregister(l, b)),
            1 => span().prop_map(Op::LookupLocal),
            2 => local.clone().prop_map(Op::LookupLocal),
            3 => remote.clone().prop_map(|(a, n, l, p)| Op::CheckRemote(a, n, l, p)),
            3 => local.prop_map(Op::PinLocal),
            3 => remote.prop_map(|(a, n, l, p)| Op::PinRemote(a, n, l, p)),
            4 => pinned_key(state).prop_map(|(location, base)| Op::Unpin(PinKey { location, base })),
            1 => k.clone().prop_map(|(l, b)| Op::Pins(l, b)),
            1 => proptest::option::of(k).prop_map(Op::RemoteRegionsAfter),
        ]
        .boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.step(op);
        state
    }
}

// ---------------------------------------------------------------------------
// The system under test

struct Sut {
    registry: Registry<Box<[Entry]>>,
    /// The model before the next operation, to compute its expected outcome.
    model: Model,
}

fn code<T>(r: te_proto::Result<T>) -> Result<T, ErrorCode> {
    r.map_err(|e| {
        assert!(!e.message().is_empty(), "{:?} without a message", e.code());
        e.code()
    })
}

impl StateMachineTest for RegistryModel {
    type SystemUnderTest = Sut;
    type Reference = RegistryModel;

    fn init_test(model: &Model) -> Sut {
        Sut {
            registry: Registry::new(vec![Entry::EMPTY; CAPACITY].into_boxed_slice()),
            model: model.clone(),
        }
    }

    fn apply(mut sut: Sut, model_after: &Model, op: Op) -> Sut {
        let expected = sut.model.step(&op);
        assert_eq!(&sut.model, model_after);
        let reg = &mut sut.registry;
        let actual = match &op {
            Op::Register(r) => Outcome::Unit(code(reg.register(*r))),
            Op::RegisterBatch(rs) => Outcome::Unit(code(reg.register_batch(rs))),
            Op::Unregister(l, b) => Outcome::Unregister(code(reg.unregister(*l, *b))),
            Op::LookupLocal(s) => Outcome::Region(code(reg.lookup_local(*s))),
            Op::CheckRemote(a, n, l, p) => Outcome::Region(code(reg.check_remote(*a, *n, *l, *p))),
            Op::PinLocal(s) => Outcome::Pin(code(reg.pin_local(*s))),
            Op::PinRemote(a, n, l, p) => Outcome::Pin(code(reg.pin_remote(*a, *n, *l, *p))),
            Op::Unpin(k) => Outcome::Unpin(reg.unpin(*k)),
            Op::Pins(l, b) => Outcome::Pins(reg.pins(*l, *b)),
            Op::RemoteRegionsAfter(after) => {
                Outcome::List(reg.remote_regions_after(*after).map(|(r, _)| r).collect())
            }
        };
        assert_eq!(actual, expected, "{op:?}");
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let reg = &sut.registry;
        let sorted = model.sorted();
        assert_eq!(reg.len(), sorted.len());
        assert_eq!(reg.is_empty(), sorted.is_empty());
        assert_eq!(reg.capacity(), CAPACITY);
        let regions: Vec<Region> = reg.regions().collect();
        let expected: Vec<Region> = sorted.iter().map(|e| e.region).collect();
        assert_eq!(regions, expected);
        for e in &sorted {
            assert_eq!(reg.pins(e.location(), e.base()), Some(e.pins));
            // Draining regions refuse local lookups; others are found.
            let found = reg.lookup_local(e.region.span);
            assert_eq!(found.is_ok(), !e.draining, "{e:?}");
        }
        // Regions of one location never overlap.
        for pair in sorted.windows(2) {
            if pair[0].location() == pair[1].location() {
                assert!(pair[0].end() <= pair[1].base(), "{pair:?}");
            }
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 4096,
        .. ProptestConfig::default()
    })]

    #[test]
    fn registry_matches_model(sequential 1..80 => RegistryModel);
}

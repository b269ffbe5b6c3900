//! Who gets a connection slot (docs/DESIGN.md, "Admission"; issue 17).
//!
//! The engine accepts at most [`Limits::max`] connections. Left alone, one
//! process could take them all: by completing handshakes (without a
//! secret), or by parking connections in the handshake and reconnecting
//! whenever one times out. [`Admission`] decides each accepted connection,
//! with no IO, over a table bounded by construction (`max` slots):
//!
//! - at most [`Limits::per_source`] connections per source address;
//! - at most [`Limits::handshaking`] connections still in the handshake;
//!   a new one **evicts** a handshaking connection rather than being
//!   refused: the oldest of the source holding the most handshaking slots,
//!   so a flood evicts its own and an honest peer's one handshake survives
//!   unless the flood comes from at least `handshaking` sources;
//! - a source at its bound makes room by evicting its own oldest
//!   handshaking connection, else it is refused;
//! - when every slot is taken a new connection evicts a handshaking one;
//!   only when all `max` slots hold established connections is it refused.
//!   So handshaking connections never keep an established peer out, and
//!   no source holds more than `per_source` established slots.
//!
//! Refusals and evictions are logged through [`RateLog`]: once per source
//! and [`LOG_INTERVAL`], with the number of the ones not logged.

use std::net::IpAddr;
use std::time::Duration;

use te_proto::Instant;

/// What counts as one source: an IPv4 address (an IPv4-mapped IPv6
/// address counts as its IPv4 one), or an IPv6 address's /64 prefix, since
/// one IPv6 host commonly holds a whole /64 and could otherwise take a new
/// address for every connection.
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// The bounds of [`Admission`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections accepted at once.
    pub max: usize,
    /// Connections from one source address at once (`1..=max`).
    pub per_source: usize,
    /// Connections in the handshake at once (`1..=max`).
    pub handshaking: usize,
}

/// The decision on one arriving connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Take it: [`Admission::insert`] it.
    Admit,
    /// Close the handshaking connection with this key first
    /// ([`Admission::remove`]), then ask again.
    Evict(usize),
    /// Refuse it.
    Refuse(Refusal),
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its source holds `limit` established connections.
    PerSource { limit: usize },
    /// All `limit` slots hold established connections.
    Full { limit: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PerSource { limit } => {
                write!(
                    f,
                    "the source has {limit} connections established (max_connections_per_source)"
                )
            }
            Refusal::Full { limit } => write!(f, "all {limit} connections are established (max_connections)"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: usize,
    source: IpAddr,
    /// Arrival order: the smallest is the oldest.
    seq: u64,
    established: bool,
}

/// The admission table: one slot per accepted connection, at most
/// [`Limits::max`]. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    slots: Vec<Slot>,
    seq: u64,
}

impl Admission {
    /// An empty table; `limits` must be valid (`EngineConfig::validate`).
    pub fn new(limits: Limits) -> Admission {
        debug_assert!(limits.max >= 1 && (1..=limits.max).contains(&limits.per_source));
        debug_assert!((1..=limits.max).contains(&limits.handshaking));
        Admission {
            limits,
            slots: Vec::with_capacity(limits.max),
            seq: 0,
        }
    }

    /// Connections in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Connections in the table still in the handshake.
    pub fn handshaking(&self) -> usize {
        self.slots.iter().filter(|s| !s.established).count()
    }

    /// Connections in the table from `source` (see [`source_of`]).
    pub fn of_source(&self, source: IpAddr) -> usize {
        let source = source_of(source);
        self.slots.iter().filter(|s| s.source == source).count()
    }

    /// The oldest handshaking connection among those `pick` accepts.
    fn oldest_handshaking(&self, pick: impl Fn(&Slot) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .filter(|s| !s.established && pick(s))
            .min_by_key(|s| s.seq)
            .map(|s| s.key)
    }

    /// The oldest handshaking connection of the source that holds the most
    /// handshaking slots (the oldest such source on a tie).
    fn flood_victim(&self) -> Option<usize> {
        let count = |src: IpAddr| {
            self.slots
                .iter()
                .filter(|s| !s.established && s.source == src)
                .count()
        };
        let worst = self
            .slots
            .iter()
            .filter(|s| !s.established)
            .max_by_key(|s| (count(s.source), std::cmp::Reverse(s.seq)))?
            .source;
        self.oldest_handshaking(|s| s.source == worst)
    }

    /// Decides on a connection from `source` (nothing changes).
    pub fn check(&self, source: IpAddr) -> Verdict {
        let source = source_of(source);
        let l = self.limits;
        if self.of_source(source) >= l.per_source {
            return match self.oldest_handshaking(|s| s.source == source) {
                Some(k) => Verdict::Evict(k),
                None => Verdict::Refuse(Refusal::PerSource { limit: l.per_source }),
            };
        }
        if self.handshaking() >= l.handshaking || self.slots.len() >= l.max {
            return match self.flood_victim() {
                Some(k) => Verdict::Evict(k),
                None => Verdict::Refuse(Refusal::Full { limit: l.max }),
            };
        }
        Verdict::Admit
    }

    /// Enters the connection `key` from `source`, handshaking, after
    /// [`check`](Self::check) said [`Verdict::Admit`]. The table never
    /// grows past its bound: an insert without room is refused (false).
    pub fn insert(&mut self, key: usize, source: IpAddr) -> bool {
        let source = source_of(source);
        if self.check(source) != Verdict::Admit || self.slots.iter().any(|s| s.key == key) {
            debug_assert!(false, "insert without room, or of a key held");
            return false;
        }
        self.seq += 1;
        self.slots.push(Slot {
            key,
            source,
            seq: self.seq,
            established: false,
        });
        true
    }

    /// Whether the connection `key` is in the table and still in its
    /// handshake.
    pub fn is_handshaking(&self, key: usize) -> bool {
        self.slots.iter().any(|s| s.key == key && !s.established)
    }

    /// The connection `key` finished its handshake (and, with a secret,
    /// proved it).
    pub fn established(&mut self, key: usize) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.key == key) {
            s.established = true;
        }
    }

    /// The connection `key` is gone (closed, evicted, or never entered:
    /// then nothing happens).
    pub fn remove(&mut self, key: usize) {
        self.slots.retain(|s| s.key != key);
    }
}

/// How often one source's refusals (or evictions) are logged.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Sources remembered by [`RateLog`]; beyond, the one logged longest ago
/// is forgotten (and may be logged again early).
const LOG_SOURCES: usize = 256;

/// Says whether to log an event about a source now: at most once per
/// source and [`LOG_INTERVAL`]. Bounded: [`LOG_SOURCES`] sources.
#[derive(Debug, Default)]
pub(crate) struct RateLog {
    /// Source, when it was last logged, events not logged since.
    seen: Vec<(IpAddr, Instant, u64)>,
}

impl RateLog {
    /// An event about `source` at `now`: `Some(n)` to log it now, where `n`
    /// events of this source were not logged since the last line; `None`
    /// to stay quiet.
    pub fn note(&mut self, source: IpAddr, now: Instant) -> Option<u64> {
        if let Some(e) = self.seen.iter_mut().find(|e| e.0 == source) {
            if now.saturating_duration_since(e.1) < LOG_INTERVAL {
                e.2 += 1;
                return None;
            }
            let quiet = std::mem::take(&mut e.2);
            e.1 = now;
            return Some(quiet);
        }
        if self.seen.len() >= LOG_SOURCES {
            if let Some(i) = (0..self.seen.len()).min_by_key(|&i| self.seen[i].1) {
                self.seen.swap_remove(i);
            }
        }
        self.seen.push((source, now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
    }

    /// Admits a connection the way the engine does: evicting as told.
    /// Returns the keys evicted, or the refusal.
    fn arrive(a: &mut Admission, key: usize, src: IpAddr) -> Result<Vec<usize>, Refusal> {
        let mut evicted = Vec::new();
        loop {
            match a.check(src) {
                Verdict::Admit => {
                    assert!(a.insert(key, src));
                    return Ok(evicted);
                }
                Verdict::Evict(k) => {
                    assert!(evicted.len() < 2, "evicts more than it needs");
                    a.remove(k);
                    evicted.push(k);
                }
                Verdict::Refuse(r) => return Err(r),
            }
        }
    }

    const LIMITS: Limits = Limits {
        max: 8,
        per_source: 3,
        handshaking: 4,
    };

    #[test]
    fn a_source_at_its_bound_evicts_its_own_handshake_or_is_refused() {
        let mut a = Admission::new(LIMITS);
        for k in 0..3 {
            arrive(&mut a, k, ip(2)).unwrap();
        }
        assert_eq!(arrive(&mut a, 3, ip(2)), Ok(vec![0]), "its oldest handshake goes");
        for k in 1..=3 {
            a.established(k);
        }
        assert_eq!(arrive(&mut a, 4, ip(2)), Err(Refusal::PerSource { limit: 3 }));
        assert_eq!(arrive(&mut a, 5, ip(3)), Ok(vec![]), "another source gets in");
    }

    #[test]
    fn a_handshake_flood_evicts_itself_not_the_one_handshake_of_an_honest_peer() {
        let mut a = Admission::new(LIMITS);
        arrive(&mut a, 100, ip(1)).unwrap();
        // Two flooding sources, many connections each, all parked.
        let mut key = 0;
        for round in 0..50 {
            for src in [ip(2), ip(3)] {
                arrive(&mut a, key, src).unwrap();
                key += 1;
            }
            assert!(
                a.slots.iter().any(|s| s.key == 100),
                "honest handshake evicted in round {round}"
            );
            assert!(a.handshaking() <= LIMITS.handshaking);
        }
    }

    #[test]
    fn established_peers_are_never_refused_for_handshaking_ones() {
        let mut a = Admission::new(LIMITS);
        // Established connections from distinct sources fill half the table.
        for k in 0..4 {
            arrive(&mut a, k, ip(10 + k as u8)).unwrap();
            a.established(k);
        }
        // Handshakes fill the rest.
        for k in 4..8 {
            arrive(&mut a, k, ip(20 + k as u8)).unwrap();
        }
        assert_eq!(a.len(), 8);
        // Any newcomer still gets in, at the cost of the oldest handshake.
        assert_eq!(arrive(&mut a, 8, ip(99)), Ok(vec![4]));
        // Only a table of established connections refuses.
        for k in 5..=8 {
            a.established(k);
        }
        assert_eq!(arrive(&mut a, 9, ip(98)), Err(Refusal::Full { limit: 8 }));
        a.remove(0);
        assert_eq!(arrive(&mut a, 9, ip(98)), Ok(vec![]));
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_a_mapped_ipv4_address_its_ipv4_one() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(other));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(source_of(mapped), ip(2));
        let mut t = Admission::new(LIMITS);
        for k in 0..3 {
            arrive(&mut t, k, a).unwrap();
            t.established(k);
        }
        assert_eq!(arrive(&mut t, 3, b), Err(Refusal::PerSource { limit: 3 }));
        assert_eq!(arrive(&mut t, 4, other), Ok(vec![]));
    }

    #[test]
    fn refusals_are_logged_once_per_source_and_interval() {
        let mut log = RateLog::default();
        let t0 = Instant::from_nanos(1);
        assert_eq!(log.note(ip(2), t0), Some(0));
        for i in 0..7000u64 {
            assert_eq!(log.note(ip(2), t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(log.note(ip(3), t0), Some(0), "another source is logged");
        assert_eq!(log.note(ip(2), t0 + LOG_INTERVAL), Some(7000));
        // Bounded: many sources, the table stays at its size.
        for n in 0..=255u8 {
            for m in 0..4u8 {
                log.note(IpAddr::V4(Ipv4Addr::new(10, 0, m, n)), t0);
            }
        }
        assert!(log.seen.len() <= LOG_SOURCES);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Arrive(u8),
        Establish(usize),
        Close(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0u8..5).prop_map(Op::Arrive),
            2 => any::<usize>().prop_map(Op::Establish),
            1 => any::<usize>().prop_map(Op::Close),
        ];
        proptest::collection::vec(op, 1..300)
    }

    proptest! {
        /// Against a plain model: the bounds hold after every step, a
        /// refusal happens only when the rules say so, and an eviction takes
        /// a handshaking connection, of the arriving source when that one
        /// is at its bound.
        #[test]
        fn bounds_hold_and_refusals_and_evictions_follow_the_rules(
            ops in ops(),
            max in 1usize..12,
            per in 1usize..6,
            hs in 1usize..6,
        ) {
            let limits = Limits { max, per_source: per.min(max), handshaking: hs.min(max) };
            let mut a = Admission::new(limits);
            let mut next = 0usize;
            for op in ops {
                match op {
                    Op::Arrive(s) => {
                        let src = ip(s);
                        let before = a.slots.clone();
                        let mine = before.iter().filter(|x| x.source == src).count();
                        let mine_hs = before.iter().filter(|x| x.source == src && !x.established).count();
                        match arrive(&mut a, next, src) {
                            Ok(evicted) => {
                                for k in &evicted {
                                    let s = before.iter().find(|x| x.key == *k).expect("evicts a connection held");
                                    prop_assert!(!s.established, "evicted an established connection");
                                    if mine >= limits.per_source {
                                        prop_assert_eq!(s.source, src);
                                    }
                                }
                            }
                            Err(Refusal::PerSource { .. }) => {
                                prop_assert!(mine >= limits.per_source && mine_hs == 0);
                            }
                            Err(Refusal::Full { .. }) => {
                                prop_assert!(before.len() >= limits.max);
                                prop_assert!(before.iter().all(|x| x.established));
                            }
                        }
                        next += 1;
                    }
                    Op::Establish(i) if !a.slots.is_empty() => {
                        let k = a.slots[i % a.slots.len()].key;
                        a.established(k);
                    }
                    Op::Close(i) if !a.slots.is_empty() => {
                        let k = a.slots[i % a.slots.len()].key;
                        a.remove(k);
                    }
                    _ => {}
                }
                prop_assert!(a.len() <= limits.max);
                prop_assert!(a.handshaking() <= limits.handshaking);
                for s in &a.slots {
                    prop_assert!(a.of_source(s.source) <= limits.per_source);
                }
                prop_assert!(a.slots.capacity() <= limits.max.max(4), "the table grew");
            }
        }
    }
}

//! One seed's run: the world it sets up, the operations it draws, and the
//! drain at the end in which everything must end and nothing be left.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use te_proto::endpoint::{Endpoint, EndpointConfig, Parts};
use te_proto::link::LinkConfig;
use te_proto::{Location, Span, Unregister};
use te_testkit::fabric::{Fabric, FabricConfig, NodeId, Sabotage};
use te_testkit::rng::SimRng;

use super::model::NodeModel;
use super::runtime::{Runtime, NOTE_QUEUE};
use super::workload::{ms, ARENA, REGIONS};
use super::world::World;

impl World {
    /// A world of 2 to 4 nodes for `seed`, each with a few regions.
    pub fn new(seed: u64, sabotage: Option<Sabotage>, trace: bool) -> World {
        // One seed in four runs on a slow, choppy network: long delays,
        // small pipes, mostly tiny pieces. Still, a pipe moves at least
        // 200 KB/s, so one frame of 16 KiB crosses well within the idle
        // timeout: a peer that only receives answers a ping only after the
        // frame ahead of it, and te-proto counts only received bytes as
        // signs of life.
        let slow = SimRng::with_seed(seed ^ 0x5eed_5eed_5eed_5eed).chance(1, 4);
        let cfg = if slow {
            FabricConfig {
                max_delay: ms(10),
                pipe_capacity: (2048, 8192),
                tiny_piece_one_in: 2,
                sabotage,
                ..FabricConfig::default()
            }
        } else {
            FabricConfig {
                sabotage,
                ..FabricConfig::default()
            }
        };
        let mut fab = Fabric::new(seed, cfg);
        let n = fab.rng().range(2, 4) as usize;
        let secret = fab.rng().chance(1, 4);
        let mut rt = Vec::new();
        let mut models = Vec::new();
        for i in 0..n {
            let base = 0x10_0000 * (i as u64 + 1);
            // One transfer timeout per engine: short, long, or all but none.
            let timeout = match fab.rng().below(8) {
                0..=1 => Duration::from_secs(60),
                2 => Duration::from_micros(fab.rng().range(500, 15_000)),
                _ => ms(fab.rng().range(20, 3000)),
            };
            let ep_cfg = EndpointConfig {
                transfer_timeout: timeout,
                max_notifications: NOTE_QUEUE,
                ..EndpointConfig::default()
            };
            let parts = Parts::with_capacity(REGIONS, 8, 48, n);
            let mut ep = Endpoint::new(ep_cfg, parts).expect("as many entries as slots");
            let seg: Vec<_> = (0..n)
                .map(|p| (p != i).then(|| ep.open_segment(&format!("node{p}")).expect("a slot per peer")))
                .collect();
            let node = fab.add_node(base, ARENA, ep);
            let mut bytes = vec![0u8; ARENA];
            fab.rng().fill(&mut bytes);
            if let Some(m) = fab.node_mut(node).arena.get_mut(Span::cpu(base, ARENA as u64)) {
                m.copy_from_slice(&bytes);
            }
            models.push(NodeModel::new(base, &bytes));
            let mut cfg = LinkConfig::new(&format!("node{i}")).expect("valid name");
            cfg.max_payload = 4096 << fab.rng().below(3);
            cfg.max_outstanding = fab.rng().range(1, 8) as u32;
            cfg.heartbeat_interval = ms(100);
            cfg.idle_timeout = ms(700);
            cfg.handshake_timeout = ms(500);
            if secret {
                cfg = cfg.with_secret(b"simulated secret").expect("valid secret");
            }
            rt.push(Runtime {
                cfg,
                timeout,
                seg,
                out: vec![None; n],
                notes: vec![VecDeque::new(); n],
                wanted: vec![false; n],
                queued: vec![VecDeque::new(); n],
            });
        }
        let mut w = World {
            queries: BTreeMap::new(),
            infos: [0; 3],
            fab,
            rt,
            models,
            tasks: BTreeMap::new(),
            batches: BTreeMap::new(),
            notes: Vec::new(),
            reports: Vec::new(),
            trace,
            steps: 0,
        };
        for node in 0..n {
            for _ in 0..w.rng().range(1, 3) {
                w.register(node);
            }
        }
        w
    }

    /// Whether every registry is empty and no link has a request in flight.
    fn idle(&self) -> bool {
        let regs = (0..self.rt.len()).all(|n| self.fab.node(NodeId(n)).reg().is_empty());
        regs && self.fab.live_conns().all(|c| {
            let (a, b) = self.fab.nodes_of(c);
            [a, b]
                .iter()
                .all(|&n| self.fab.link(c, n).is_none_or(|l| l.requests_in_flight() == 0))
        })
    }

    /// Runs the whole seed: random operations, then the drain and the
    /// final checks.
    pub fn run(&mut self) {
        let faults = self.rng().below(3) > 0;
        let ops = self.rng().range(20, 150);
        for _ in 0..ops {
            if self.failed() {
                return;
            }
            let gap = if self.rng().chance(1, 5) {
                self.rng().range(0, 300)
            } else {
                self.rng().range(0, 4)
            };
            self.settle(ms(gap));
            self.op(faults);
            self.handle_reports();
            self.check_batch_table();
        }
        self.drain();
    }

    /// No new work: thaw everything and run until every task and
    /// notification ended; then free every batch, unregister every region
    /// and check that nothing is left behind.
    fn drain(&mut self) {
        self.fab.thaw_all();
        let limit = self.now() + Duration::from_secs(30);
        while !self.failed() && self.now() < limit && !self.unfinished().is_empty() {
            self.settle(ms(50));
        }
        if self.failed() {
            return;
        }
        let left = self.unfinished();
        if !left.is_empty() {
            return self.violation(format!("still running 30 s after the workload: {left:?}"));
        }
        for (b, rec) in std::mem::take(&mut self.batches) {
            if let Err(e) = self.fab.node_mut(NodeId(b.0)).ep.free_batch(rec.id) {
                self.violation(format!("node {}: free of finished batch: {e}", b.0));
            }
            let st = self.fab.node(NodeId(b.0)).ep.batch_status(rec.id);
            if st.is_ok() {
                self.violation(format!("node {}: freed batch still answers {st:?}", b.0));
            }
        }
        self.check_batch_table();
        self.settle(ms(50));
        for n in 0..self.rt.len() {
            let bases: Vec<u64> = self.models[n]
                .regions
                .iter()
                .filter(|r| !r.draining)
                .map(|r| r.base)
                .collect();
            for base in bases {
                let got = self.fab.node_mut(NodeId(n)).ep.unregister(Location::Cpu, base);
                let m = &mut self.models[n];
                match got {
                    Ok(Unregister::Removed(_)) => m.regions.retain(|r| r.base != base),
                    Ok(Unregister::Draining { .. }) => m
                        .regions
                        .iter_mut()
                        .filter(|r| r.base == base)
                        .for_each(|r| r.draining = true),
                    Err(e) => self.violation(format!("node {n}: unregister {base:#x} at the end: {e}")),
                }
            }
        }
        // Answers to requests of tasks that ended early are still on the
        // wire; once they are in, nothing may be left.
        let limit = self.now() + Duration::from_secs(10);
        while !self.failed() && self.now() < limit && !self.idle() {
            self.settle(ms(50));
        }
        for n in 0..self.rt.len() {
            let reg = self.fab.node(NodeId(n)).reg();
            if !reg.is_empty() {
                let left: Vec<_> = reg
                    .regions()
                    .map(|r| (r.span.addr, reg.pins(Location::Cpu, r.span.addr)))
                    .collect();
                self.violation(format!(
                    "node {n}: regions left 10 s after unregistering all (pins leaked): {left:x?}"
                ));
            }
        }
        let live: Vec<_> = self.fab.live_conns().collect();
        for c in live {
            let (a, b) = self.fab.nodes_of(c);
            for n in [a, b] {
                let busy = self
                    .fab
                    .link(c, n)
                    .map_or((0, 0), |l| (l.tasks_in_flight(), l.requests_in_flight()));
                if busy != (0, 0) {
                    self.violation(format!(
                        "conn {} node {}: (tasks, requests) {busy:?} left on the link 10 s after every task ended",
                        c.0, n.0
                    ));
                }
            }
        }
    }
}

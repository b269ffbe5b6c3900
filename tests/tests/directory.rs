//! Named segments through a directory, against real etcd and Redis servers
//! (started by the test on free loopback ports; skipped with a printed
//! reason only where the server is not installed).

use std::time::{Duration, Instant};

use te_runtime::directory::{Directory, Entry};
use te_runtime::{Engine, EngineConfig, ErrorCode, Perm};
use te_tests::proc::{check_pattern, PeerProcess};
use te_tests::stores::{poll_until, Kind, StoreServer};

const PEER: &str = env!("CARGO_BIN_EXE_te-peer");
const LEN: u64 = 1 << 20;

/// An engine named `name` (or by its address) publishing in `store`.
fn engine(store: &StoreServer, name: Option<&str>) -> Result<Engine, te_runtime::Status> {
    Engine::start(EngineConfig {
        segment_name: name.map(str::to_string),
        directory: Some(store.url()),
        directory_ttl: Duration::from_secs(2),
        ..EngineConfig::default()
    })
}

/// A `te-peer` process named `name` in `store`, its region filled with `seed`.
fn peer(store: &StoreServer, name: &str, seed: u64) -> PeerProcess {
    let url = store.url();
    PeerProcess::spawn(
        PEER,
        "127.0.0.1:0",
        LEN,
        seed,
        &["--name", name, "--directory", &url, "--directory-ttl-ms", "2000"],
    )
}

/// The port a named `te-peer` listens on (the line after its READY).
fn listen_port(peer: &PeerProcess) -> u16 {
    let line = peer.line(Duration::from_secs(10)).expect("LISTEN line");
    line.strip_prefix("LISTEN ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"))
}

/// Reads the whole region of `peer` by name and checks it holds `seed`'s pattern.
fn read_by_name(e: &Engine, local: u64, name: &str, peer: &PeerProcess, seed: u64) {
    e.transfer_sync_read(name, local, peer.addr, LEN)
        .unwrap_or_else(|err| panic!("read of {name}: {err}"));
    // SAFETY: the read ended; `local` is engine memory of LEN bytes.
    unsafe { check_pattern(local, LEN, seed, 0) }.unwrap_or_else(|err| panic!("{name}: {err}"));
}

fn a_named_segment_is_reached_through_the_directory(kind: Kind) {
    let Some(store) = StoreServer::start(kind) else {
        return;
    };
    let target = engine(&store, Some("prefill-3")).expect("target starts");
    let remote = target.alloc_memory(LEN, Perm::REMOTE_READ_WRITE).unwrap();
    let entry = store.directory().lookup("prefill-3").unwrap().expect("published");
    assert_eq!(entry.tcp.port(), target.rpc_port());
    assert_eq!(entry.pid, std::process::id());

    let initiator = engine(&store, None).expect("initiator starts");
    let local = initiator.alloc_memory(LEN, Perm::LOCAL_ONLY).unwrap();
    // SAFETY: engine memory of LEN bytes, ours.
    unsafe { te_tests::fill(local, LEN, 5) };
    initiator
        .transfer_sync_write("prefill-3", local, remote, LEN)
        .unwrap();
    // SAFETY: the write ended; `remote` is the target's engine memory.
    unsafe { check_pattern(remote, LEN, 5, 0) }.unwrap();

    let e = initiator.open_segment("decode-9").unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(e.message().contains(&store.url()), "{e}");
    // A host:port that is not in the directory is still reached peer to peer.
    let by_addr = format!("127.0.0.1:{}", target.rpc_port());
    initiator
        .transfer_sync_read(&by_addr, local, remote, 4096)
        .unwrap();
}

fn a_restarted_target_is_reached_again_by_name(kind: Kind) {
    let Some(store) = StoreServer::start(kind) else {
        return;
    };
    let initiator = engine(&store, None).expect("initiator starts");
    let local = initiator.alloc_memory(LEN, Perm::LOCAL_ONLY).unwrap();
    let mut first = peer(&store, "prefill-3", 1);
    read_by_name(&initiator, local, "prefill-3", &first, 1);
    let old = store.directory().lookup("prefill-3").unwrap().expect("published");
    first.stop();

    let second = peer(&store, "prefill-3", 2);
    let new = store
        .directory()
        .lookup("prefill-3")
        .unwrap()
        .expect("published again");
    assert_ne!(new.instance, old.instance);
    assert_eq!(new.tcp.port(), listen_port(&second));
    // The application only calls again: the lost link is noticed, the name
    // looked up again, the new process reached.
    read_by_name(&initiator, local, "prefill-3", &second, 2);
}

fn a_killed_target_expires_with_its_lease(kind: Kind) {
    let Some(store) = StoreServer::start(kind) else {
        return;
    };
    let mut target = peer(&store, "prefill-3", 1);
    let dir = store.directory();
    let entry = dir.lookup("prefill-3").unwrap().expect("published");
    assert_eq!(entry.pid, target.pid());
    target.kill();
    let killed = Instant::now();
    // Nobody withdrew it: the entry is still there, until its lease ends.
    assert_eq!(
        dir.lookup("prefill-3").unwrap().map(|e| e.instance),
        Some(entry.instance)
    );
    assert!(
        poll_until(Duration::from_secs(10), || dir
            .lookup("prefill-3")
            .unwrap()
            .is_none()),
        "the entry of a killed target is still there {:?} after the kill (lease 2 s)",
        killed.elapsed()
    );
    // The name is free again.
    let next = engine(&store, Some("prefill-3")).expect("the name is free");
    assert_eq!(
        dir.lookup("prefill-3").unwrap().unwrap().tcp.port(),
        next.rpc_port()
    );
}

fn a_second_engine_may_not_take_a_held_name(kind: Kind) {
    let Some(store) = StoreServer::start(kind) else {
        return;
    };
    let first = engine(&store, Some("prefill-3")).expect("first starts");
    let e = engine(&store, Some("prefill-3")).map(drop).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid, "{e}");
    let holder = format!("pid {} on", std::process::id());
    assert!(
        e.message().contains("prefill-3") && e.message().contains(&holder),
        "{e}"
    );
    // The entry is still the first engine's, and a clean finalize removes it at once.
    let dir = store.directory();
    assert_eq!(
        dir.lookup("prefill-3").unwrap().unwrap().tcp.port(),
        first.rpc_port()
    );
    first.finalize();
    assert_eq!(dir.lookup("prefill-3").unwrap(), None);
    engine(&store, Some("prefill-3")).expect("the name is free after finalize");
}

fn a_store_outage_keeps_links_and_fails_lookups_clearly(kind: Kind) {
    let Some(mut store) = StoreServer::start(kind) else {
        return;
    };
    let target = peer(&store, "prefill-3", 1);
    let initiator = engine(&store, None).expect("initiator starts");
    let local = initiator.alloc_memory(LEN, Perm::LOCAL_ONLY).unwrap();
    read_by_name(&initiator, local, "prefill-3", &target, 1);

    store.stop();
    // The open link keeps moving data.
    read_by_name(&initiator, local, "prefill-3", &target, 1);
    // A new lookup fails at once, naming the store.
    let e = initiator.open_segment("decode-9").unwrap_err();
    assert_eq!(e.code(), ErrorCode::RuntimeError, "{e}");
    assert!(e.message().contains(&store.url()), "{e}");
    // So does publishing a new engine.
    let e = engine(&store, Some("decode-9")).map(drop).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RuntimeError, "{e}");

    store.restart();
    // The target's keeper renews (etcd kept the entry) or publishes again
    // (Redis came back empty).
    let dir = store.directory();
    assert!(
        poll_until(Duration::from_secs(10), || dir
            .lookup("prefill-3")
            .is_ok_and(|e| e.is_some())),
        "the target's entry is not back 10 s after the store restarted"
    );
    let fresh = engine(&store, None).expect("a new engine starts");
    let local2 = fresh.alloc_memory(LEN, Perm::LOCAL_ONLY).unwrap();
    read_by_name(&fresh, local2, "prefill-3", &target, 1);
}

fn a_hundred_segments_register_at_once(kind: Kind) {
    let Some(store) = StoreServer::start(kind) else {
        return;
    };
    let engines: Vec<Engine> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..100)
            .map(|i| {
                let store = &store;
                s.spawn(move || engine(store, Some(&format!("worker-{i}"))))
            })
            .collect();
        starts
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join()
                    .expect("no panic")
                    .unwrap_or_else(|e| panic!("worker-{i}: {e}"))
            })
            .collect()
    });
    let dir = store.directory();
    for (i, e) in engines.iter().enumerate() {
        let entry = dir.lookup(&format!("worker-{i}")).unwrap().expect("published");
        assert_eq!(entry.tcp.port(), e.rpc_port(), "worker-{i}");
    }
    drop(engines);
    for i in 0..100 {
        assert_eq!(
            dir.lookup(&format!("worker-{i}")).unwrap(),
            None,
            "worker-{i} withdrawn"
        );
    }
}

fn a_stale_entry_reaches_no_other_engine(kind: Kind) {
    let Some(store) = StoreServer::start(kind) else {
        return;
    };
    // An entry for "ghost" that points at a port where another engine runs now.
    let other = engine(&store, Some("other")).expect("other starts");
    let ghost = Entry {
        name: "ghost".into(),
        tcp: format!("127.0.0.1:{}", other.rpc_port()).parse().unwrap(),
        paths: vec!["tcp".into()],
        location: "cpu".into(),
        host: "gone".into(),
        pid: 1,
        instance: "0".into(),
    };
    let dir = store.directory();
    let _lease = dir.publish(&ghost, Duration::from_secs(30)).expect("published");
    let initiator = engine(&store, None).expect("initiator starts");
    let e = initiator.open_segment("ghost").unwrap_err();
    assert_eq!(e.code(), ErrorCode::RuntimeError, "{e}");
    assert!(
        e.message().contains("stale directory entry") && e.message().contains("other"),
        "{e}"
    );
    // The engine that answered is still reachable under its own name.
    initiator.open_segment("other").expect("other by its own name");
}

/// etcd's endpoints are tried in order: a dead first endpoint costs a refused connect, no failure.
#[test]
fn etcd_endpoints_are_tried_in_order() {
    let Some(store) = StoreServer::start(Kind::Etcd) else {
        return;
    };
    let _target = engine(&store, Some("prefill-3")).expect("target starts");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let live = store.url();
    let url = format!("etcd://{dead},{}", live.trim_start_matches("etcd://"));
    let dir = Directory::open(&url, "te", Duration::from_secs(5)).unwrap();
    assert!(dir.lookup("prefill-3").unwrap().is_some());
    let only_dead = Directory::open(&format!("etcd://{dead}"), "te", Duration::from_secs(5)).unwrap();
    let e = only_dead.lookup("prefill-3").unwrap_err();
    assert_eq!(e.code(), ErrorCode::RuntimeError, "{e}");
    assert!(e.message().contains(&dead.to_string()), "{e}");
}

macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod etcd {
            $( #[test] fn $case() { super::$case(super::Kind::Etcd) } )*
        }
        mod redis {
            $( #[test] fn $case() { super::$case(super::Kind::Redis) } )*
        }
    };
}

on_both_stores!(
    a_named_segment_is_reached_through_the_directory,
    a_restarted_target_is_reached_again_by_name,
    a_killed_target_expires_with_its_lease,
    a_second_engine_may_not_take_a_held_name,
    a_store_outage_keeps_links_and_fails_lookups_clearly,
    a_hundred_segments_register_at_once,
    a_stale_entry_reaches_no_other_engine,
);

/// Bad directory settings are refused at start, naming the bad value, before any store is asked.
#[test]
fn bad_directory_settings_are_refused_at_start() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (cfg, says) in [
        (
            EngineConfig {
                directory: Some("mysql://h:1".into()),
                ..EngineConfig::default()
            },
            "scheme \"mysql\"",
        ),
        (
            EngineConfig {
                directory: Some(format!("redis://{dead}")),
                directory_ttl: Duration::from_millis(500),
                ..EngineConfig::default()
            },
            "directory_ttl",
        ),
        (
            EngineConfig {
                directory: Some(format!("redis://{dead}")),
                directory_prefix: "a b".into(),
                ..EngineConfig::default()
            },
            "prefix",
        ),
        (
            EngineConfig {
                listen: "0.0.0.0:0".into(),
                directory: Some(format!("redis://{dead}")),
                ..EngineConfig::default()
            },
            "no address peers can reach",
        ),
    ] {
        let e = Engine::start(cfg).map(drop).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Invalid, "{e}");
        assert!(e.message().contains(says), "{e}");
    }
    // A store that is not there: RuntimeError naming it.
    let e = Engine::start(EngineConfig {
        directory: Some(format!("redis://{dead}")),
        ..EngineConfig::default()
    })
    .map(drop)
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::RuntimeError, "{e}");
    assert!(e.message().contains(&dead.to_string()), "{e}");
}

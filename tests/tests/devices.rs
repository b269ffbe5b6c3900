//! Device memory (`sim:N`, and `npu:N` on the fake libascendcl.so) through
//! the runtime: two engines in one process over loopback move data between
//! host and device memory byte-exact, staged through bounded, reused
//! buffers; injected driver faults fail exactly the affected tasks with the
//! driver's code and message.

use std::time::Duration;

use te_proto::driver::DeviceDriver;
use te_runtime::sim::{Faults, SimConfig};
use te_runtime::{
    BatchId, Engine, EngineConfig, ErrorCode, Location, Op, Path, Perm, Request, SegmentId, TaskState,
};
use te_tests::acl::{config_on_fake, fake_acl};
use te_tests::fill_fast;

const WAIT: Duration = Duration::from_secs(60);

fn engine_at(location: Location) -> Engine {
    Engine::start(config_at(location)).expect("engine starts")
}

/// An engine's settings in `location`; `npu:N` runs on the fake
/// libascendcl.so. TCP only: these tests are of the staging through
/// connection buffers (npu memory over the same-host path is
/// tests/npu_same_host.rs).
fn config_at(location: Location) -> EngineConfig {
    config_on_fake(location, Path::Tcp)
}

fn device(loc: Location) -> u16 {
    match loc {
        Location::Sim(n) => n,
        other => panic!("{other} is not a sim device"),
    }
}

/// `len` bytes of a deterministic pattern seeded with `seed`.
fn data(len: u64, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    // SAFETY: `v` is ours and `len` bytes long.
    unsafe { fill_fast(v.as_mut_ptr() as u64, len, seed) };
    v
}

fn read_back(e: &Engine, addr: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    e.read_memory(addr, &mut v).expect("read back");
    v
}

/// Runs `reqs` as one batch and returns each task's end state.
fn run_batch(e: &Engine, reqs: &[Request]) -> (BatchId, Vec<TaskState>) {
    let batch = e.allocate_batch(reqs.len() as u32).expect("batch");
    e.submit(batch, reqs).expect("submit");
    e.wait_batch(batch, WAIT).expect("batch ends");
    let states = e
        .tasks_status(batch)
        .expect("status")
        .iter()
        .map(|t| t.state)
        .collect();
    (batch, states)
}

/// Sizes at odd offsets, 5 bytes apart: `(length, offset)`.
fn placed(sizes: &[u64]) -> (Vec<(u64, u64)>, u64) {
    let mut off = 3;
    let places = sizes
        .iter()
        .map(|&len| {
            let at = off;
            off += len + 5;
            (len, at)
        })
        .collect();
    (places, off)
}

/// Writes then reads back every size between an initiator in `local` and a
/// target in `remote`, all tasks of a direction in one batch.
fn round_trip(local: Location, remote: Location, sizes: &[u64]) {
    round_trip_between(&engine_at(local), &engine_at(remote), sizes);
}

/// [`round_trip`] between two engines already started.
fn round_trip_between(initiator: &Engine, target: &Engine, sizes: &[u64]) {
    let (local, remote) = (initiator.location(), target.location());
    let (places, total) = placed(sizes);
    let src = initiator
        .alloc_memory(total, Perm::LOCAL_ONLY)
        .expect("local source");
    let dst = initiator
        .alloc_memory(total, Perm::LOCAL_ONLY)
        .expect("local destination");
    let mem = target
        .alloc_memory(2 * total, Perm::REMOTE_READ_WRITE)
        .expect("target memory");
    let seg = initiator.open_segment(&target.segment_name()).expect("open");
    // Same host, but forced to TCP: device memory on either side goes
    // through the staging.
    assert_eq!(initiator.segment_path(seg).expect("path"), Path::Tcp);
    initiator.write_memory(src, &data(total, 1)).expect("fill source");
    target
        .write_memory(mem + total, &data(total, 2))
        .expect("fill target");
    let req = |op, local: u64, remote: u64, len| Request {
        op,
        local,
        segment: seg,
        remote,
        len,
    };

    let writes: Vec<Request> = places
        .iter()
        .map(|&(len, at)| req(Op::Write, src + at, mem + at, len))
        .collect();
    let (_, states) = run_batch(initiator, &writes);
    let reads: Vec<Request> = places
        .iter()
        .map(|&(len, at)| req(Op::Read, dst + at, mem + total + at, len))
        .collect();
    let (_, read_states) = run_batch(initiator, &reads);

    let sent = data(total, 1);
    let served = data(total, 2);
    for (i, &(len, at)) in places.iter().enumerate() {
        let what = format!("{local} -> {remote}, {len} bytes");
        assert_eq!(states[i], TaskState::Completed, "write {what}");
        assert_eq!(read_states[i], TaskState::Completed, "read {what}");
        let r = at as usize..(at + len) as usize;
        assert!(
            read_back(target, mem + at, len) == sent[r.clone()],
            "write {what} not byte-exact"
        );
        assert!(
            read_back(initiator, dst + at, len) == served[r],
            "read {what} not byte-exact"
        );
    }
}

const SIZES: &[u64] = &[1, 7, 4095, 4096, 4097, 65_537, (1 << 20) + 3, 64 << 20];

#[test]
fn cpu_to_sim_is_byte_exact_from_1_byte_to_64_mib() {
    round_trip(Location::Cpu, Location::Sim(3), SIZES);
}

#[test]
fn sim_to_cpu_is_byte_exact_from_1_byte_to_64_mib() {
    round_trip(Location::Sim(0), Location::Cpu, SIZES);
}

#[test]
fn sim_to_sim_is_byte_exact_from_1_byte_to_64_mib() {
    round_trip(Location::Sim(7), Location::Sim(1), SIZES);
    round_trip(Location::Sim(2), Location::Sim(2), &[1, 4096, (1 << 20) + 3]);
}

#[test]
fn npu_memory_on_acl_moves_byte_exact_to_and_from_host_sim_and_npu_memory() {
    let (_g, fake) = fake_acl();
    round_trip(Location::Cpu, Location::Npu(0), SIZES);
    round_trip(Location::Npu(1), Location::Cpu, SIZES);
    round_trip(
        Location::Npu(0),
        Location::Npu(1),
        &[1, 4097, (1 << 20) + 3, 16 << 20],
    );
    round_trip(Location::Sim(3), Location::Npu(0), &[65_537, 8 << 20]);
    // Large payloads went through the streams, and nothing was left behind.
    assert!(fake.calls("aclrtMemcpyAsync") > 0);
    assert_eq!(fake.live(), (0, 0), "allocations and staging freed");
}

#[test]
fn npu_copies_stalled_on_the_device_are_waited_for_with_one_staging_slot_or_several() {
    let (_g, fake) = fake_acl();
    for slots in [1, 4] {
        let start = |location| {
            Engine::start(EngineConfig {
                staging_slots: slots,
                ..config_at(location)
            })
            .expect("engine starts")
        };
        // Every stream task of the fake takes 2 ms: copies end well after
        // they were queued, on both sides.
        fake.stall(2);
        round_trip_between(
            &start(Location::Npu(0)),
            &start(Location::Npu(1)),
            &[65_537, 8 << 20],
        );
        fake.stall(0);
    }
}

/// Reads or writes of 64 KiB (staged through the streams) with one
/// `aclrtMemcpyAsync` failing on its stream on the target: exactly that
/// task fails, with ACL's code named.
fn one_acl_fault_on_the_target(op: Op) {
    let (_g, fake) = fake_acl();
    let target = engine_at(Location::Npu(0));
    let initiator = engine_at(Location::Cpu);
    expect_one_failure(&initiator, &target, op, 64 << 10, ErrorCode::RuntimeError, || {
        fake.fail("aclrtMemcpyAsync", 5, 507_053, true);
        "aclrtMemcpyAsync on npu:0: ACL error 507053 (ACL_ERROR_RT_DEVICE_MEM_ERROR)".to_string()
    });
}

#[test]
fn a_failed_acl_copy_on_the_target_fails_only_its_read() {
    one_acl_fault_on_the_target(Op::Read);
}

#[test]
fn a_failed_acl_copy_on_the_target_fails_only_its_write() {
    one_acl_fault_on_the_target(Op::Write);
}

#[test]
fn device_copies_that_end_later_are_waited_for_with_one_staging_slot_or_several() {
    for slots in [1, 4] {
        let start = |location| {
            Engine::start(EngineConfig {
                location,
                staging_slots: slots,
                ..EngineConfig::default()
            })
            .expect("engine starts")
        };
        let (target, initiator) = (start(Location::Sim(1)), start(Location::Sim(2)));
        // Every asynchronous copy ends a millisecond after it started: the
        // connections must wait for them, sending and receiving.
        for (e, dev) in [(&target, 1), (&initiator, 2)] {
            let slow = Faults {
                latency: Duration::from_millis(1),
                ..Faults::default()
            };
            e.with_sim_driver(|s| s.set_faults(dev, slow)).expect("faults");
        }
        round_trip_between(&initiator, &target, &[1, 65_537, (1 << 20) + 3, 8 << 20]);
    }
}

#[test]
fn device_memory_is_reachable_only_through_the_driver() {
    let e = engine_at(Location::Sim(4));
    let addr = e.alloc_memory(4096, Perm::REMOTE_READ_WRITE).expect("alloc");
    let region = e.regions()[0];
    assert_eq!(region.span.location, Location::Sim(4));
    // The address is the driver's, which knows it as sim:4 memory.
    e.with_sim_driver(|s| s.check_range(4, te_proto::driver::DeviceAddr(addr), 4096))
        .expect("a sim:4 allocation");
    // Outside the registered memory the engine refuses, naming the address.
    let mut buf = [0u8; 16];
    let err = e.read_memory(addr + 4090, &mut buf).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    // Device memory registered by hand must be a driver allocation.
    let extra = e.with_sim_driver(|s| s.alloc(4, 8192)).expect("driver alloc");
    // SAFETY: device memory; the engine reaches it only through the driver.
    unsafe { e.register_memory(extra.0, 8192, Perm::REMOTE_READ) }.expect("register");
    // SAFETY: refused before anything is registered.
    let err = unsafe { e.register_memory(extra.0 + 4096, 8192, Perm::REMOTE_READ) }.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
    assert!(err.message().contains("past the allocation"), "{err}");
    e.write_memory(extra.0 + 1, b"abc").expect("write");
    assert_eq!(read_back(&e, extra.0, 5), b"\0abc\0");
    e.free_memory(addr).expect("free");
    assert_eq!(e.with_sim_driver(|s| s.capacity(4)).expect("capacity").used, 8192);
}

/// Where a fault is injected: the initiator's device or the target's.
#[derive(Clone, Copy, Debug)]
enum Side {
    Initiator,
    Target,
}

/// 16 tasks of `len` bytes in one batch from `initiator` to `target`, with
/// one device copy failing as `inject` (run once the source is filled)
/// arranges it: exactly one task fails, with `code` and a message holding
/// what `inject` returns, the others are byte-exact, and the same batch
/// again completes in full.
fn expect_one_failure(
    initiator: &Engine,
    target: &Engine,
    op: Op,
    len: u64,
    code: ErrorCode,
    inject: impl FnOnce() -> String,
) {
    const N: u64 = 16;
    let mine = initiator.alloc_memory(N * len, Perm::LOCAL_ONLY).expect("local");
    let theirs = target
        .alloc_memory(N * len, Perm::REMOTE_READ_WRITE)
        .expect("remote");
    let seg = initiator.open_segment(&target.segment_name()).expect("open");
    let (src_engine, src) = match op {
        Op::Write => (initiator, mine),
        Op::Read => (target, theirs),
    };
    src_engine.write_memory(src, &data(N * len, 9)).expect("fill");
    let names = inject();
    let reqs: Vec<Request> = (0..N)
        .map(|i| Request {
            op,
            local: mine + i * len,
            segment: seg,
            remote: theirs + i * len,
            len,
        })
        .collect();
    let (batch, states) = run_batch(initiator, &reqs);
    let case = format!("{op:?}, {} -> {}", initiator.location(), target.location());
    let failed: Vec<usize> = (0..N as usize)
        .filter(|&i| states[i] != TaskState::Completed)
        .collect();
    assert_eq!(failed.len(), 1, "{case}: {states:?}");
    assert_eq!(states[failed[0]], TaskState::Failed(code), "{case}");
    let err = initiator.batch_error(batch).expect("the failure is recorded");
    assert_eq!(err.code(), code);
    assert!(err.message().contains(&names), "{case}: {err}");
    let want = data(N * len, 9);
    let (dst_engine, dst) = match op {
        Op::Write => (target, theirs),
        Op::Read => (initiator, mine),
    };
    for i in (0..N as usize).filter(|i| *i != failed[0]) {
        let at = i as u64 * len;
        let got = read_back(dst_engine, dst + at, len);
        assert!(
            got == want[at as usize..(at + len) as usize],
            "{case}: task {i} not byte-exact"
        );
    }
    // Both engines carry on.
    let (_, again) = run_batch(initiator, &reqs);
    assert!(
        again.iter().all(|s| *s == TaskState::Completed),
        "{case}: {again:?}"
    );
}

/// The 3rd next operation of the faulty side's `sim:N` fails: exactly its
/// task fails, naming the injected failure.
fn one_fault_in_a_batch(op: Op, faulty: Side) {
    let (local, remote) = match faulty {
        Side::Initiator => (Location::Sim(5), Location::Cpu),
        Side::Target => (Location::Cpu, Location::Sim(6)),
    };
    let target = engine_at(remote);
    let initiator = engine_at(local);
    let (sick, dev) = match faulty {
        Side::Initiator => (&initiator, device(local)),
        Side::Target => (&target, device(remote)),
    };
    expect_one_failure(&initiator, &target, op, 4096, ErrorCode::NotSupported, || {
        let nth = sick.with_sim_driver(|s| s.stats(dev)).expect("stats").ops + 3;
        let faults = Faults {
            fail_op: Some((nth, ErrorCode::NotSupported)),
            ..Faults::default()
        };
        sick.with_sim_driver(|s| s.set_faults(dev, faults))
            .expect("faults");
        format!("sim:{dev}: injected failure of operation {nth}")
    });
}

#[test]
fn a_failed_copy_on_the_target_fails_only_its_read() {
    one_fault_in_a_batch(Op::Read, Side::Target);
}

#[test]
fn a_failed_copy_on_the_target_fails_only_its_write() {
    one_fault_in_a_batch(Op::Write, Side::Target);
}

#[test]
fn a_failed_copy_on_the_initiator_fails_only_its_read() {
    one_fault_in_a_batch(Op::Read, Side::Initiator);
}

#[test]
fn a_failed_copy_on_the_initiator_fails_only_its_write() {
    one_fault_in_a_batch(Op::Write, Side::Initiator);
}

#[test]
fn allocation_beyond_capacity_fails_with_a_message() {
    let e = engine_at(Location::Sim(2));
    let cap = e.with_sim_driver(|s| s.capacity(2)).expect("capacity").total;
    let err = e.alloc_memory(cap + 1, Perm::REMOTE_READ_WRITE).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RuntimeError, "{err}");
    assert!(err.message().contains(&format!("{} bytes", cap + 1)), "{err}");
    let limit = Faults {
        alloc_limit: Some(1 << 20),
        ..Faults::default()
    };
    e.with_sim_driver(|s| s.set_faults(2, limit)).expect("faults");
    e.alloc_memory(768 << 10, Perm::REMOTE_READ_WRITE)
        .expect("within the limit");
    let err = e.alloc_memory(512 << 10, Perm::REMOTE_READ_WRITE).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RuntimeError, "{err}");
    assert!(
        err.message().contains("524288 bytes") && err.message().contains("786432 of 1048576"),
        "{err}"
    );
    assert_eq!(e.regions().len(), 1, "a refused allocation registers nothing");
    // A device the driver does not have.
    let err = engine_at(Location::Sim(8))
        .alloc_memory(4096, Perm::LOCAL_ONLY)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
    assert!(err.message().contains("sim:8"), "{err}");
}

#[test]
fn the_simulated_devices_are_configured_per_engine() {
    let sim = SimConfig {
        devices: 2,
        capacity: 1 << 20,
        ..SimConfig::default()
    };
    let start = |location| {
        Engine::start(EngineConfig {
            location,
            sim,
            ..EngineConfig::default()
        })
    };
    let e = start(Location::Sim(1)).expect("sim:1 of 2");
    assert_eq!(e.with_sim_driver(|s| s.device_count()), 2);
    e.alloc_memory(1 << 20, Perm::REMOTE_READ_WRITE)
        .expect("the whole device");
    let err = e.alloc_memory(1, Perm::REMOTE_READ_WRITE).unwrap_err();
    assert!(err.message().contains("1048576 of 1048576"), "{err}");
    let err = start(Location::Sim(2))
        .expect("starts")
        .alloc_memory(4096, Perm::LOCAL_ONLY)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
    assert!(
        err.message().contains("sim:2") && err.message().contains("2 sim devices"),
        "{err}"
    );
    let bad = SimConfig {
        devices: 0,
        ..SimConfig::default()
    };
    let err = Engine::start(EngineConfig {
        sim: bad,
        ..EngineConfig::default()
    })
    .map(|_| ())
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
}

fn read_one(e: &Engine, seg: SegmentId, local: u64, remote: u64, len: u64) -> TaskState {
    let req = Request {
        op: Op::Read,
        local,
        segment: seg,
        remote,
        len,
    };
    run_batch(e, &[req]).1[0]
}

#[test]
fn a_vanished_device_fails_its_tasks_and_the_engines_keep_serving() {
    let device_engine = engine_at(Location::Sim(3));
    let host = engine_at(Location::Cpu);
    let other_host = engine_at(Location::Cpu);
    let dev_mem = device_engine
        .alloc_memory(1 << 20, Perm::REMOTE_READ_WRITE)
        .expect("sim memory");
    let host_mem = host
        .alloc_memory(1 << 20, Perm::REMOTE_READ_WRITE)
        .expect("host memory");
    let other_mem = other_host
        .alloc_memory(1 << 20, Perm::REMOTE_READ_WRITE)
        .expect("host memory");
    let to_dev = host.open_segment(&device_engine.segment_name()).expect("open");
    let to_other = host.open_segment(&other_host.segment_name()).expect("open");
    let from_dev = device_engine.open_segment(&host.segment_name()).expect("open");
    assert_eq!(
        read_one(&host, to_dev, host_mem, dev_mem, 1 << 20),
        TaskState::Completed
    );

    device_engine
        .with_sim_driver(|s| s.disappear(3))
        .expect("disappear");
    let gone = TaskState::Failed(ErrorCode::Disconnected);
    // A peer reading the device, the device engine reading into it.
    let batch = host.allocate_batch(2).expect("batch");
    let reqs = [
        Request {
            op: Op::Read,
            local: host_mem,
            segment: to_dev,
            remote: dev_mem,
            len: 4096,
        },
        Request {
            op: Op::Read,
            local: host_mem + 4096,
            segment: to_other,
            remote: other_mem,
            len: 4096,
        },
    ];
    host.submit(batch, &reqs).expect("submit");
    host.wait_batch(batch, WAIT).expect("ends");
    let states: Vec<TaskState> = host
        .tasks_status(batch)
        .expect("status")
        .iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, [gone, TaskState::Completed]);
    let err = host.batch_error(batch).expect("failure");
    assert!(err.message().contains("sim:3 has disappeared"), "{err}");
    assert_eq!(read_one(&device_engine, from_dev, dev_mem, host_mem, 4096), gone);
    let err = device_engine.read_memory(dev_mem, &mut [0u8; 1]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Disconnected, "{err}");

    // The connections stay up: the device engine still answers its peer,
    // and the host engine still moves host memory.
    let info = host
        .segment_info(to_dev)
        .expect("segment info from the device engine");
    assert_eq!(info.len(), 1);
    assert_eq!(
        read_one(&host, to_other, host_mem, other_mem, 1 << 20),
        TaskState::Completed
    );
    assert_eq!(read_one(&host, to_dev, host_mem, dev_mem, 4096), gone);
    device_engine
        .free_memory(dev_mem)
        .expect("free still unregisters");
    assert!(device_engine.regions().is_empty());
}

#[test]
fn staging_buffers_are_bounded_and_reused() {
    let target = engine_at(Location::Sim(1));
    let initiator = engine_at(Location::Cpu);
    let max_payload = EngineConfig::default().max_payload as u64;
    let len = 8 * max_payload + 3;
    let remote = target.alloc_memory(len, Perm::REMOTE_READ_WRITE).expect("remote");
    let local = initiator.alloc_memory(len, Perm::LOCAL_ONLY).expect("local");
    let seg = initiator.open_segment(&target.segment_name()).expect("open");
    // Filled in pieces, so that the largest copy the driver saw is the engine's.
    let pattern = data(len, 4);
    for (i, piece) in pattern.chunks(4096).enumerate() {
        target
            .write_memory(remote + i as u64 * 4096, piece)
            .expect("fill");
    }
    let stats = || target.with_sim_driver(|s| s.stats(1)).expect("stats");
    let before = stats();
    assert_eq!(
        read_one(&initiator, seg, local, remote, len),
        TaskState::Completed
    );
    // A connection stages through two rings (sending, receiving) of at most
    // four slots of at most one frame payload each, whatever the transfer.
    let ring_bound = 2 * 4 * max_payload;
    let staged = target.staging_bytes();
    assert!(staged > 0 && staged as u64 <= ring_bound, "{staged} bytes staged");
    let allocations = || target.with_sim_driver(|s| s.staging_allocations());
    let slots = allocations();
    assert!((1..=8).contains(&slots), "{slots} staging buffers");
    for _ in 0..20 {
        assert_eq!(
            read_one(&initiator, seg, local, remote, len),
            TaskState::Completed
        );
        let write = Request {
            op: Op::Write,
            local,
            segment: seg,
            remote,
            len,
        };
        assert_eq!(run_batch(&initiator, &[write]).1[0], TaskState::Completed);
    }
    let staged_after = target.staging_bytes();
    assert!(staged_after as u64 <= ring_bound, "{staged_after} bytes staged");
    assert!(
        allocations() <= 8,
        "staging buffers are reused: {}",
        allocations()
    );
    let after = stats();
    // Every byte crossed between host and device exactly once, in copies of
    // at most one frame payload.
    assert_eq!(after.host_bytes - before.host_bytes, 41 * len);
    assert!(after.largest_host_copy <= max_payload, "{after:?}");
    assert!(after.copies_to_host - before.copies_to_host >= 21 * 9);
    assert!(read_back(&initiator, local, len) == pattern);
    assert_eq!(initiator.staging_bytes(), 0, "host memory is never staged");
}

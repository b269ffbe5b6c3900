//! NPU memory over the same-host path between two OS processes, on the
//! fake libascendcl.so: this test process runs the initiating [`Engine`],
//! a `te-peer` child process the owner of the registered memory.
//!
//! - npu↔npu (one device and two), npu↔cpu and cpu↔npu reads and writes
//!   forced onto the same-host path, byte-exact; an initiator's npu
//!   buffer reaches the owner by an ACL IPC key (exported here, imported
//!   there) and this process copies none of the bytes itself;
//! - the owner's checks hold: a read-only npu region refuses a write;
//! - revocation: after unregister (free) returns, the export is closed,
//!   after the owner closed its import (CANN's order): the fake's export
//!   record is gone, so no import of the key can work;
//! - faults in the IPC calls: a failed export sends exactly that transfer
//!   over TCP (path auto) or fails exactly it (path shm); a failed import
//!   in the owner fails exactly the transfer it was for.

use std::time::Duration;

use te_runtime::{Engine, ErrorCode, Location, Op, Path, Perm, Request, SegmentId, Status, TaskState};
use te_tests::acl::{config_on_fake, fake_acl, fake_path};
use te_tests::proc::PeerProcess;
use te_tests::transfer;

const PEER: &str = env!("CARGO_BIN_EXE_te-peer");
const WAIT: Duration = Duration::from_secs(60);
const LEN: u64 = 4 << 20;

/// The initiating engine in `location`, on the fake ACL.
fn engine(location: Location, path: Path) -> Engine {
    Engine::start(config_on_fake(location, path)).expect("engine starts")
}

/// An owner process with a region of `LEN` bytes in `location` filled with
/// `pattern(seed, i)`, plus `extra` options and environment.
fn owner(location: Location, seed: u64, extra: &[&str], env: &[(&str, &str)]) -> PeerProcess {
    let (loc, acl) = (location.to_string(), fake_path());
    let args = [&["--location", loc.as_str(), "--acl", acl.as_str()], extra].concat();
    PeerProcess::spawn_with_env(PEER, "127.0.0.1:0", LEN, seed, &args, env)
}

fn open(e: &Engine, p: &PeerProcess) -> SegmentId {
    e.open_segment(&p.segment).expect("open the owner's segment")
}

fn pattern(len: u64, seed: u64, start: u64) -> Vec<u8> {
    (0..len).map(|i| te_tests::pattern(seed, start + i)).collect()
}

fn read_back(e: &Engine, addr: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    e.read_memory(addr, &mut v).expect("read back");
    v
}

/// Reads the owner's pattern at a few sizes and offsets, writes a new one
/// and reads it back, all forced onto the same-host path.
fn round_trips(e: &Engine, p: &PeerProcess, seg: SegmentId, what: &str) {
    let half = LEN / 2;
    let local = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    for (k, &n) in [1u64, 4095, 65_537, 1 << 20, half - 8192].iter().enumerate() {
        let roff = [0, 1, 4093][k % 3];
        transfer(e, seg, Op::Read, local, p.addr + roff, n, Path::Shm)
            .unwrap_or_else(|err| panic!("{what}: read of {n}: {err}"));
        assert!(
            read_back(e, local, n) == pattern(n, p.seed, roff),
            "{what}: read of {n} bytes is not the owner's"
        );
        let fresh = pattern(n, 100 + k as u64, 0);
        e.write_memory(local, &fresh).expect("fill");
        transfer(e, seg, Op::Write, local, p.addr + roff, n, Path::Shm)
            .unwrap_or_else(|err| panic!("{what}: write of {n}: {err}"));
        transfer(e, seg, Op::Read, local + half, p.addr + roff, n, Path::Shm)
            .unwrap_or_else(|err| panic!("{what}: read-back of {n}: {err}"));
        assert!(
            read_back(e, local + half, n) == fresh,
            "{what}: write of {n} bytes read back wrong"
        );
        // The owner's pattern again, for the next size.
        e.write_memory(local, &pattern(n, p.seed, roff)).expect("fill");
        transfer(e, seg, Op::Write, local, p.addr + roff, n, Path::Shm).expect("restore");
    }
    e.free_memory(local).expect("free");
}

#[test]
fn npu_and_host_memory_move_byte_exact_over_the_same_host_path_in_every_combination() {
    let (_g, fake) = fake_acl();
    for (here, there) in [
        (Location::Npu(0), Location::Npu(0)),
        (Location::Npu(0), Location::Npu(1)),
        (Location::Npu(1), Location::Cpu),
        (Location::Cpu, Location::Npu(0)),
    ] {
        let what = format!("{here} -> {there}");
        let p = owner(there, 7, &[], &[]);
        let e = engine(here, Path::Shm);
        let seg = open(&e, &p);
        let (exports, copies) = (fake.calls("aclrtIpcMemGetExportKey"), fake.calls("aclrtMemcpy"));
        let staged = fake.calls("aclrtMemcpyAsync");
        let misuse = fake.ipc_misuse();
        round_trips(&e, &p, seg, &what);
        let exported = fake.calls("aclrtIpcMemGetExportKey") - exports;
        if here.is_host() {
            assert_eq!(exported, 0, "{what}: host memory needs no key");
        } else {
            // One key for the one buffer on this link, however many tasks.
            assert_eq!(exported, 1, "{what}");
            // The owner moved the bytes: this process copied only to fill
            // and check its own buffer (four read_memory/write_memory per
            // size, five sizes), never through the TCP path's staging.
            assert_eq!(fake.calls("aclrtMemcpy") - copies, 4 * 5, "{what}");
            assert_eq!(fake.calls("aclrtMemcpyAsync"), staged, "{what}: staged like TCP");
        }
        // A buffer still exported when the engine finalizes: the owner
        // closes its import before the export is closed, as at free.
        let kept = e.alloc_memory(1 << 20, Perm::LOCAL_ONLY).expect("alloc");
        transfer(&e, seg, Op::Read, kept, p.addr, 1 << 20, Path::Shm).expect("read");
        e.finalize();
        assert_eq!(fake.live_ipc(), 0, "{what}: an export outlived the engine");
        assert_eq!(
            fake.ipc_misuse(),
            misuse,
            "{what}: an exporter closed before its importer"
        );
    }
}

#[test]
fn a_read_only_npu_region_refuses_a_write_over_the_same_host_path() {
    let (_g, _fake) = fake_acl();
    let p = owner(Location::Npu(0), 3, &["--perm", "r"], &[]);
    let e = engine(Location::Npu(1), Path::Shm);
    let seg = open(&e, &p);
    let local = e.alloc_memory(1 << 16, Perm::LOCAL_ONLY).expect("alloc");
    transfer(&e, seg, Op::Read, local, p.addr, 1 << 16, Path::Shm).expect("reads are allowed");
    assert!(read_back(&e, local, 1 << 16) == pattern(1 << 16, 3, 0));
    let err = transfer(&e, seg, Op::Write, local, p.addr, 4096, Path::Shm).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotAuthorized, "{err}");
    // Nothing was written: the owner's bytes are still its pattern.
    transfer(&e, seg, Op::Read, local, p.addr, 4096, Path::Shm).expect("read again");
    assert!(
        read_back(&e, local, 4096) == pattern(4096, 3, 0),
        "a refused write landed"
    );
}

/// The fake's export records of this process (one file per open export).
fn export_records() -> usize {
    let dir = std::env::var_os("TE_FAKE_ACL_SHM_DIR").unwrap_or_else(|| "/dev/shm".into());
    let prefix = format!("te-fake-acl-{}-key-", std::process::id());
    std::fs::read_dir(dir)
        .expect("the fake's directory")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && !name.contains(".imp-")
        })
        .count()
}

#[test]
fn after_unregister_returns_the_key_is_closed_and_the_owner_cannot_import_it() {
    let (_g, fake) = fake_acl();
    let p = owner(Location::Npu(0), 5, &[], &[]);
    let e = engine(Location::Npu(0), Path::Shm);
    let seg = open(&e, &p);
    let local = e.alloc_memory(1 << 20, Perm::LOCAL_ONLY).expect("alloc");
    let records = export_records();
    let closes = fake.calls("aclrtIpcMemClose");
    let misuse = fake.ipc_misuse();
    transfer(&e, seg, Op::Read, local, p.addr, 1 << 20, Path::Shm).expect("read");
    assert_eq!(export_records(), records + 1, "the buffer is exported");
    e.free_memory(local).expect("free");
    // Revoked before free_memory returned: the record the owner's imports
    // and copies check is gone, so importing the key fails from now on.
    assert_eq!(export_records(), records, "the export outlived unregister");
    assert_eq!(fake.calls("aclrtIpcMemClose"), closes + 1);
    // The export was closed only after the owner closed its import and
    // said so (KeyClosed), the order CANN wants; the fake counts the other.
    assert_eq!(
        fake.ipc_misuse(),
        misuse,
        "the exporter closed before the importer"
    );
    assert_eq!(fake.live_ipc(), 0);
    // A new buffer gets a new key, and the link keeps working.
    let again = e.alloc_memory(1 << 20, Perm::LOCAL_ONLY).expect("alloc");
    transfer(&e, seg, Op::Read, again, p.addr, 1 << 20, Path::Shm).expect("read with a new key");
    assert!(read_back(&e, again, 1 << 20) == pattern(1 << 20, 5, 0));
}

#[test]
fn a_failed_export_sends_exactly_its_transfer_over_tcp_or_fails_exactly_it() {
    let (_g, fake) = fake_acl();
    let p = owner(Location::Npu(1), 9, &[], &[]);
    for path in [Path::Auto, Path::Shm] {
        let e = engine(Location::Npu(0), path);
        let seg = open(&e, &p);
        let local = e.alloc_memory(1 << 20, Perm::LOCAL_ONLY).expect("alloc");
        fake.fail("aclrtIpcMemGetExportKey", 1, 507022, false);
        let staged = fake.calls("aclrtMemcpyAsync");
        let first = transfer(&e, seg, Op::Read, local, p.addr, 1 << 20, path);
        match path {
            Path::Auto => {
                first.expect("the transfer falls back to TCP");
                assert!(
                    fake.calls("aclrtMemcpyAsync") > staged,
                    "not staged: not over TCP"
                );
                assert!(read_back(&e, local, 1 << 20) == pattern(1 << 20, 9, 0));
            }
            _ => {
                let err = first.unwrap_err();
                assert_eq!(err.code(), ErrorCode::NotSupported, "{err}");
            }
        }
        // The next transfer exports again and takes the same-host path.
        let staged = fake.calls("aclrtMemcpyAsync");
        transfer(&e, seg, Op::Read, local + 4096, p.addr, 8192, path).expect("second transfer");
        assert_eq!(
            fake.calls("aclrtMemcpyAsync"),
            staged,
            "{path}: the second went over TCP"
        );
        assert!(read_back(&e, local + 4096, 8192) == pattern(8192, 9, 0));
        e.finalize();
    }
}

#[test]
fn a_failed_import_in_the_owner_fails_exactly_the_transfer_it_was_for() {
    let (_g, _fake) = fake_acl();
    let p = owner(
        Location::Npu(0),
        11,
        &[],
        &[("TE_FAKE_ACL_FAIL", "aclrtIpcMemImportByKey:1:507022")],
    );
    let e = engine(Location::Npu(1), Path::Shm);
    let seg = open(&e, &p);
    let local = e.alloc_memory(1 << 20, Perm::LOCAL_ONLY).expect("alloc");
    let err = transfer(&e, seg, Op::Read, local, p.addr, 4096, Path::Shm).unwrap_err();
    assert!(
        err.message().contains("aclrtIpcMemImportByKey") && err.message().contains("507022"),
        "{err}"
    );
    // The owner imports again for the next one.
    transfer(&e, seg, Op::Read, local, p.addr, 1 << 20, Path::Shm).expect("the next transfer");
    assert!(read_back(&e, local, 1 << 20) == pattern(1 << 20, 11, 0));
}

/// Reads 16 blocks of the owner's npu region in one batch over the
/// same-host path; the end state of each task and the batch's error.
fn read_batch(
    e: &Engine,
    p: &PeerProcess,
    seg: SegmentId,
    local: u64,
    block: u64,
) -> (Vec<TaskState>, Option<Status>) {
    let reqs: Vec<Request> = (0..16)
        .map(|i| Request {
            op: Op::Read,
            local: local + i * block,
            segment: seg,
            remote: p.addr + i * block,
            len: block,
        })
        .collect();
    let batch = e.allocate_batch(16).expect("batch");
    e.submit_via(batch, &reqs, Path::Shm).expect("submit");
    e.wait_batch(batch, WAIT).expect("batch ends");
    let states = e
        .tasks_status(batch)
        .expect("status")
        .iter()
        .map(|t| t.state)
        .collect();
    let err = e.batch_error(batch);
    e.free_batch(batch).expect("free");
    (states, err)
}

#[test]
fn owner_device_copies_that_end_later_or_fail_on_the_stream_are_reported_in_order() {
    let (_g, _fake) = fake_acl();
    const BLOCK: u64 = 64 << 10;
    // Each stream task of the owner's fake takes 20 ms: the copies are
    // still running when the loop first looks.
    let slow = owner(Location::Npu(0), 13, &[], &[("TE_FAKE_ACL_STALL_MS", "20")]);
    let e = engine(Location::Npu(1), Path::Shm);
    let seg = open(&e, &slow);
    let local = e.alloc_memory(16 * BLOCK, Perm::LOCAL_ONLY).expect("alloc");
    let (states, err) = read_batch(&e, &slow, seg, local, BLOCK);
    assert!(
        states.iter().all(|s| *s == TaskState::Completed),
        "{states:?} {err:?}"
    );
    assert!(
        read_back(&e, local, 16 * BLOCK) == pattern(16 * BLOCK, 13, 0),
        "stalled copies not byte-exact"
    );
    // The owner's 5th stream copy fails on the stream (after its submission
    // succeeded): exactly that read fails, naming the code.
    let failing = owner(
        Location::Npu(0),
        17,
        &[],
        &[("TE_FAKE_ACL_FAIL", "aclrtMemcpyAsync:5:507053:async")],
    );
    let seg = open(&e, &failing);
    let (states, err) = read_batch(&e, &failing, seg, local, BLOCK);
    let failed: Vec<usize> = (0..16).filter(|&i| states[i] != TaskState::Completed).collect();
    assert_eq!(failed.len(), 1, "{states:?}");
    let err = err.expect("the failure is recorded");
    assert!(err.message().contains("507053"), "{err}");
    let want = pattern(16 * BLOCK, 17, 0);
    for i in (0..16u64).filter(|&i| i as usize != failed[0]) {
        let at = (i * BLOCK) as usize;
        assert!(
            read_back(&e, local + i * BLOCK, BLOCK) == want[at..at + BLOCK as usize],
            "read {i} not byte-exact"
        );
    }
    // The link carries on: the same batch again completes in full.
    let (again, _) = read_batch(&e, &failing, seg, local, BLOCK);
    assert!(again.iter().all(|s| *s == TaskState::Completed), "{again:?}");
}

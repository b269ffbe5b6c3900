//! te-driver-rdma on the fake libibverbs across two processes: this test binary starts
//! itself as the peer (the ignored test `peer`, which owns the target memory), exchanges
//! connection info and region keys with it over the child's stdin/stdout, and moves bytes
//! with one-sided READ and WRITE that the child's fake NIC serves.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, fake, hex, open, pattern, unhex, wait_all};
use te_driver_rdma::error::{IBV_WC_REM_ACCESS_ERR, IBV_WC_RETRY_EXC_ERR, IBV_WC_WR_FLUSH_ERR};
use te_driver_rdma::{ConnInfo, Event, Op, QpId, RdmaConfig, RdmaDriver, RemoteKey, Transfer};
use te_proto::{ErrorCode, Perm};

/// Size of the peer's read-write region.
const RW_LEN: usize = 4 << 20;
/// Size of the peer's read-only region.
const RO_LEN: usize = 64 << 10;

/// The peer process, as the parent sees it.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    conn: ConnInfo,
    rw: RemoteKey,
    ro: RemoteKey,
}

impl Peer {
    /// Starts the peer (with `env` added) and reads what it offers.
    fn spawn(env: &[(&str, &str)]) -> Peer {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["--ignored", "--exact", "peer", "--nocapture", "--test-threads=1"])
            .env("TE_RDMA_TEST_PEER", "1")
            .env("TE_FAKE_VERBS_DEVICES", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the peer");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut p = Peer {
            child,
            stdin,
            stdout,
            conn: ConnInfo {
                qpn: 0,
                psn: 0,
                gid: [0; 16],
                lid: 0,
                mtu: 1,
            },
            rw: RemoteKey {
                addr: 0,
                len: 0,
                rkey: 0,
            },
            ro: RemoteKey {
                addr: 0,
                len: 0,
                rkey: 0,
            },
        };
        assert_eq!(p.expect("device"), "fake_verbs0", "the peer loaded the fake");
        p.conn = ConnInfo::decode(&unhex(&p.expect("conn"))).expect("conn info");
        p.rw = RemoteKey::decode(&unhex(&p.expect("rw"))).expect("rw key");
        p.ro = RemoteKey::decode(&unhex(&p.expect("ro"))).expect("ro key");
        p
    }

    /// The next protocol line, which must start with `PEER <word> `: the rest.
    fn expect(&mut self, word: &str) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read from the peer");
            assert!(n > 0, "the peer exited before saying {word}");
            // libtest may print "test peer ... " in front of the first line.
            if let Some(at) = line.find("PEER ") {
                let rest = line[at + 5..].trim_end();
                let (w, arg) = rest.split_once(' ').unwrap_or((rest, ""));
                assert_eq!(w, word, "peer said {rest:?}");
                return arg.to_string();
            }
        }
    }

    /// Sends one command line and returns the peer's answer to it.
    fn ask(&mut self, cmd: &str, answer: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("write to the peer");
        self.stdin.flush().expect("flush");
        self.expect(answer)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer side, run in the child process only.
#[test]
#[ignore = "the peer process of the cross-process tests; they start it"]
fn peer() {
    assert!(
        std::env::var_os("TE_RDMA_TEST_PEER").is_some(),
        "run by the cross-process tests, not by hand"
    );
    let mut rw = pattern(RW_LEN, 1);
    let ro = pattern(RO_LEN, 2);
    // TE_RDMA_TEST_BY_NAME: the default lookup (TE_VERBS_LIBRARY, else the loader's
    // libibverbs.so.1), which the parent pointed at the fake.
    let cfg = match std::env::var_os("TE_RDMA_TEST_BY_NAME") {
        Some(_) => RdmaConfig::default(),
        None => config(),
    };
    let mut d = RdmaDriver::open(cfg).expect("the peer opens the fake");
    println!("PEER device {}", d.info().name);
    // SAFETY: the buffers outlive the driver (the process exits with both alive).
    let (mrw, mro) = unsafe {
        (
            d.register(rw.as_mut_ptr() as u64, RW_LEN as u64, Perm::REMOTE_READ_WRITE)
                .expect("reg rw"),
            d.register(ro.as_ptr() as u64, RO_LEN as u64, Perm::REMOTE_READ)
                .expect("reg ro"),
        )
    };
    let q = d.create_qp().expect("create qp");
    println!("PEER conn {}", hex(&d.conn_info(q).expect("info").encode()));
    println!("PEER rw {}", hex(&mrw.remote_key().encode()));
    println!("PEER ro {}", hex(&mro.remote_key().encode()));
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["conn", h] => {
                d.connect(q, &ConnInfo::decode(&unhex(h)).expect("conn"))
                    .expect("connect");
                println!("PEER ready");
            }
            ["check", off, len, seed] => {
                let (off, len, seed): (usize, usize, u8) =
                    (off.parse().unwrap(), len.parse().unwrap(), seed.parse().unwrap());
                // SAFETY: the NIC wrote the region from another thread; the writer's
                // completion came before this command, so the bytes are in place.
                let now = unsafe { std::slice::from_raw_parts(rw.as_ptr().add(off), len) };
                let ok = now == pattern(len, seed).as_slice();
                println!("PEER check {}", if ok { "ok" } else { "bad" });
            }
            ["dereg", "ro"] => {
                println!("PEER dereg {:?}", d.deregister(mro.lkey).expect("dereg"));
            }
            ["exit"] => break,
            other => panic!("unknown command {other:?}"),
        }
        std::io::stdout().flush().expect("flush");
    }
}

/// This side's driver with one QP connected to `p`.
fn connect(p: &mut Peer, cfg: RdmaConfig) -> (RdmaDriver, QpId) {
    let mut d = open(cfg);
    let q = d.create_qp().expect("create qp");
    d.connect(q, &p.conn).expect("connect to the peer");
    let mine = hex(&d.conn_info(q).expect("info").encode());
    p.ask(&format!("conn {mine}"), "ready");
    (d, q)
}

#[test]
fn reads_and_writes_across_processes_move_exact_bytes() {
    let (_g, fake) = fake();
    let mut p = Peer::spawn(&[]);
    let mut buf = vec![0u8; RW_LEN];
    let (mut d, q) = connect(
        &mut p,
        RdmaConfig {
            max_wr_bytes: 64 << 10,
            ..config()
        },
    );
    // SAFETY: `buf` outlives the driver's use of it (deregistered below).
    let m = unsafe { d.register(buf.as_mut_ptr() as u64, RW_LEN as u64, Perm::LOCAL_ONLY) }.expect("reg");
    let calls = fake.calls("wc");
    // Read both of the peer's regions whole.
    let r1 = d
        .submit(
            q,
            Transfer {
                op: Op::Read,
                lkey: m.lkey,
                local_addr: m.addr,
                remote_addr: p.rw.addr,
                rkey: p.rw.rkey,
                len: RW_LEN as u64,
            },
        )
        .expect("read rw");
    let (done, _) = wait_all(&mut d, &[r1]);
    assert_eq!(done[&r1], (Ok(()), RW_LEN as u64));
    assert!(
        buf == pattern(RW_LEN, 1),
        "the peer's read-write region arrived exactly"
    );
    assert_eq!(
        fake.calls("wc") - calls,
        (RW_LEN / (64 << 10)) as u64,
        "cut into 64 KiB work requests"
    );
    let r2 = d
        .submit(
            q,
            Transfer {
                op: Op::Read,
                lkey: m.lkey,
                local_addr: m.addr,
                remote_addr: p.ro.addr,
                rkey: p.ro.rkey,
                len: RO_LEN as u64,
            },
        )
        .expect("read ro");
    let (done, _) = wait_all(&mut d, &[r2]);
    assert!(done[&r2].0.is_ok());
    assert!(buf[..RO_LEN] == pattern(RO_LEN, 2)[..]);
    // Write a new pattern into the middle of the peer's region; the peer checks it.
    let (off, len) = (12345usize, (1 << 20) + 3);
    buf[..len].copy_from_slice(&pattern(len, 9));
    let w = d
        .submit(
            q,
            Transfer {
                op: Op::Write,
                lkey: m.lkey,
                local_addr: m.addr,
                remote_addr: p.rw.addr + off as u64,
                rkey: p.rw.rkey,
                len: len as u64,
            },
        )
        .expect("write");
    let (done, _) = wait_all(&mut d, &[w]);
    assert_eq!(done[&w], (Ok(()), len as u64));
    assert_eq!(p.ask(&format!("check {off} {len} 9"), "check"), "ok");
    assert_eq!(
        p.ask(&format!("check {} 100 9", off + 1), "check"),
        "bad",
        "the check can fail"
    );
    drop(d);
}

#[test]
fn thousands_of_work_requests_across_processes_complete() {
    let (_g, fake) = fake();
    let mut p = Peer::spawn(&[]);
    let block = 4096usize;
    let n = 2000usize;
    let src = pattern(block * 256, 7);
    let (mut d, q) = connect(
        &mut p,
        RdmaConfig {
            max_outstanding: 32,
            max_qps: 1,
            ..config()
        },
    );
    // SAFETY: `src` outlives the driver.
    let m = unsafe { d.register(src.as_ptr() as u64, src.len() as u64, Perm::LOCAL_ONLY) }.expect("reg");
    let overruns = fake.cq_overruns();
    let ids: Vec<_> = (0..n)
        .map(|i| {
            let off = ((i % 256) * block) as u64;
            d.submit(
                q,
                Transfer {
                    op: Op::Write,
                    lkey: m.lkey,
                    local_addr: m.addr + off,
                    remote_addr: p.rw.addr + off,
                    rkey: p.rw.rkey,
                    len: block as u64,
                },
            )
            .expect("submit")
        })
        .collect();
    let (done, _) = wait_all(&mut d, &ids);
    assert_eq!(done.len(), n);
    assert!(done.values().all(|(r, b)| r.is_ok() && *b == block as u64));
    assert_eq!(fake.cq_overruns(), overruns);
    assert_eq!(p.ask(&format!("check 0 {} 7", src.len()), "check"), "ok");
}

#[test]
fn the_peer_nic_enforces_permission_and_refuses_a_deregistered_rkey() {
    let (_g, _fake) = fake();
    let mut p = Peer::spawn(&[]);
    let src = pattern(RO_LEN, 5);
    let (mut d, q) = connect(&mut p, config());
    // SAFETY: `src` outlives the driver.
    let m = unsafe { d.register(src.as_ptr() as u64, RO_LEN as u64, Perm::LOCAL_ONLY) }.expect("reg");
    let w = d
        .submit(
            q,
            Transfer {
                op: Op::Write,
                lkey: m.lkey,
                local_addr: m.addr,
                remote_addr: p.ro.addr,
                rkey: p.ro.rkey,
                len: RO_LEN as u64,
            },
        )
        .expect("submit");
    let (done, _) = wait_all(&mut d, &[w]);
    let e = done[&w].0.clone().unwrap_err();
    assert_eq!(
        (e.wc_status(), e.code()),
        (Some(IBV_WC_REM_ACCESS_ERR), ErrorCode::NotAuthorized),
        "{e}"
    );
    drop(d);
    drop(p);

    // A fresh peer deregisters its read-only region; its old rkey is refused.
    let mut p = Peer::spawn(&[]);
    let mut back = vec![0u8; RO_LEN];
    let (mut d, q) = connect(&mut p, config());
    // SAFETY: `back` outlives the driver.
    let m = unsafe { d.register(back.as_mut_ptr() as u64, RO_LEN as u64, Perm::LOCAL_ONLY) }.expect("reg");
    let read = Transfer {
        op: Op::Read,
        lkey: m.lkey,
        local_addr: m.addr,
        remote_addr: p.ro.addr,
        rkey: p.ro.rkey,
        len: RO_LEN as u64,
    };
    let ok = d.submit(q, read).expect("submit");
    let (done, _) = wait_all(&mut d, &[ok]);
    assert!(done[&ok].0.is_ok(), "readable before deregistration");
    assert_eq!(p.ask("dereg ro", "dereg"), "Done");
    let r = d.submit(q, read).expect("submit");
    let (done, _) = wait_all(&mut d, &[r]);
    let e = done[&r].0.clone().unwrap_err();
    assert_eq!(e.wc_status(), Some(IBV_WC_REM_ACCESS_ERR), "{e}");
    drop(d);
    assert!(back == pattern(RO_LEN, 2));
}

#[test]
fn a_peer_killed_mid_transfer_fails_the_rest_without_hanging() {
    let (_g, _fake) = fake();
    // The peer's NIC takes 2 ms per request, so most of the batch is still queued when it dies.
    let mut p = Peer::spawn(&[("TE_FAKE_VERBS_STALL_US", "2000")]);
    let mut buf = vec![0u8; 4096 * 400];
    let (mut d, q) = connect(
        &mut p,
        RdmaConfig {
            max_outstanding: 16,
            ..config()
        },
    );
    // SAFETY: `buf` outlives the driver.
    let m = unsafe { d.register(buf.as_mut_ptr() as u64, buf.len() as u64, Perm::LOCAL_ONLY) }.expect("reg");
    let ids: Vec<_> = (0..400u64)
        .map(|i| {
            d.submit(
                q,
                Transfer {
                    op: Op::Read,
                    lkey: m.lkey,
                    local_addr: m.addr + i * 4096,
                    remote_addr: p.rw.addr + i * 4096,
                    rkey: p.rw.rkey,
                    len: 4096,
                },
            )
            .expect("submit")
        })
        .collect();
    // Wait for the first completed transfer, then kill the peer.
    let mut results = std::collections::HashMap::new();
    let mut events = Vec::new();
    while results.is_empty() {
        d.wait(Duration::from_secs(30), &mut events).expect("wait");
        for e in events.drain(..) {
            if let Event::Transfer { id, result, .. } = e {
                results.insert(id, result);
            }
        }
    }
    p.child.kill().expect("kill the peer");
    p.child.wait().expect("reap the peer");
    let start = Instant::now();
    let (rest, _) = wait_all(
        &mut d,
        &ids.iter()
            .copied()
            .filter(|id| !results.contains_key(id))
            .collect::<Vec<_>>(),
    );
    assert!(start.elapsed() < Duration::from_secs(30), "no hang");
    results.extend(rest.into_iter().map(|(k, (r, _))| (k, r)));
    assert_eq!(results.len(), 400);
    let ok = results.values().filter(|r| r.is_ok()).count();
    assert!(
        (1..400).contains(&ok),
        "{ok} of 400 succeeded before the peer died"
    );
    let statuses: Vec<_> = results.values().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        statuses.iter().all(|e| e.code() == ErrorCode::Disconnected),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|e| e.wc_status() == Some(IBV_WC_RETRY_EXC_ERR)),
        "the peer's loss is reported"
    );
    assert!(
        statuses
            .iter()
            .all(|e| matches!(e.wc_status(), Some(IBV_WC_RETRY_EXC_ERR | IBV_WC_WR_FLUSH_ERR))),
        "{statuses:?}"
    );
    // Work completes in order on a QP: the first transfer is among those that made it.
    assert!(results[&ids[0]].is_ok());
    assert!(buf[..4096] == pattern(RW_LEN, 1)[..4096]);
}

#[test]
fn the_fake_stands_in_by_loader_name_and_through_te_verbs_library() {
    let (_g, _fake) = fake();
    let so = te_fake_verbs::library_path().expect("the fake is built");
    let dir = std::env::temp_dir().join(format!("te-rdma-standin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let link = dir.join("libibverbs.so.1");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&so, &link).expect("symlink");
    let dir_s = dir.to_str().expect("utf-8 temp dir").to_string();
    let so_s = so.to_str().expect("utf-8 path").to_string();
    let peers = [
        Peer::spawn(&[("TE_RDMA_TEST_BY_NAME", "1"), ("LD_LIBRARY_PATH", &dir_s)]),
        Peer::spawn(&[("TE_RDMA_TEST_BY_NAME", "1"), ("TE_VERBS_LIBRARY", &so_s)]),
    ];
    for mut p in peers {
        let mut back = vec![0u8; RO_LEN];
        let (mut d, q) = connect(&mut p, config());
        // SAFETY: `back` outlives the driver.
        let m =
            unsafe { d.register(back.as_mut_ptr() as u64, RO_LEN as u64, Perm::LOCAL_ONLY) }.expect("reg");
        let r = d
            .submit(
                q,
                Transfer {
                    op: Op::Read,
                    lkey: m.lkey,
                    local_addr: m.addr,
                    remote_addr: p.ro.addr,
                    rkey: p.ro.rkey,
                    len: RO_LEN as u64,
                },
            )
            .expect("submit");
        let (done, _) = wait_all(&mut d, &[r]);
        assert!(done[&r].0.is_ok());
        drop(d);
        assert!(back == pattern(RO_LEN, 2));
    }
    std::fs::remove_dir_all(&dir).expect("remove the temp dir");
}

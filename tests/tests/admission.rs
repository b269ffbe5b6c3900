//! Connection slots under a flood (issue 17.1): hostile clients from
//! several source addresses at once (loopback has all of 127.0.0.0/8, so
//! each binds its sockets to 127.0.0.N before connecting) complete
//! handshakes and hold them, or park connections in the handshake and
//! reconnect whenever one is closed, while a good client from 127.0.0.1
//! keeps connecting and transferring. It must get in every time. And a
//! client that trickles a frame loses its slot, although each byte it
//! sends counts as activity.
//!
//! No sleep synchronises anything: the test waits for the hogs' handshakes
//! and for the parkers' connection counts; the parkers pace their loop by
//! a millisecond only so as not to starve the engine of CPU.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketType};
use te_proto::wire::{Decoder, Frame, Progress, AUTH_HMAC_SHA256, AUTH_NONE};
use te_runtime::{Engine, EngineConfig, Perm};
use te_tests::{hello, pattern, spin_until};

const KIB: u64 = 1 << 10;
/// The good client's transfers, each way, per round.
const LEN: u64 = 256 * KIB;
const ROUNDS: usize = 8;
const PER_SOURCE: usize = 4;
const HANDSHAKING: usize = 8;
const MAX: usize = 24;
/// Upper bound of waits only a hang reaches.
const WAIT: Duration = Duration::from_secs(20);

/// A TCP connection from `src` to `to`.
fn connect_from(src: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    rustix::net::bind(&fd, &SocketAddrV4::new(src, 0))?;
    rustix::net::connect(&fd, &to)?;
    Ok(TcpStream::from(fd))
}

/// Whether the engine let `s` in after its `Hello` without a secret: it
/// answered with a `HelloAck` without one (false when it closed the
/// connection instead, or answered with a `HelloAck` asking for a secret,
/// which precedes its refusal and which a connector refuses itself).
fn admitted_without_secret(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut dec = Decoder::new(16 << 20);
    let mut byte = [0u8; 1];
    while dec.progress() == Progress::NeedMore {
        match s.read(&mut byte) {
            Ok(1) => {
                if dec.feed(&byte).is_err() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    matches!(dec.frame(), Some(Ok(Frame::HelloAck(h))) if h.auth == AUTH_NONE)
}

/// Opens `tries` connections from `src`, one after the other, each
/// completing the handshake without a secret; returns those the engine let
/// in (they stay open while the test runs).
fn hog(src: Ipv4Addr, to: SocketAddrV4, tries: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..tries {
        let Ok(mut s) = connect_from(src, to) else {
            continue;
        };
        if s.write_all(&hello(AUTH_NONE)).is_ok() && admitted_without_secret(&mut s) {
            held.push(s);
        }
    }
    held
}

/// Keeps up to `2 * PER_SOURCE` connections from `src` parked in the
/// handshake (nothing sent, or a `Hello` asking for a secret and no
/// `Auth`), replacing each one the engine closes, until `stop`.
fn park(src: Ipv4Addr, to: SocketAddrV4, send_hello: bool, stop: &AtomicBool, made: &AtomicUsize) {
    let mut parked: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        parked.retain_mut(|s| match s.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        });
        while parked.len() < 2 * PER_SOURCE {
            let Ok(mut s) = connect_from(src, to) else { break };
            if send_hello && s.write_all(&hello(AUTH_HMAC_SHA256)).is_err() {
                continue;
            }
            s.set_nonblocking(true).expect("nonblocking");
            parked.push(s);
            made.fetch_add(1, Ordering::Relaxed);
        }
        // Pacing, not synchronisation: leave the engine some CPU.
        thread::sleep(Duration::from_millis(1));
    }
}

fn target_config(secret: Option<&[u8]>) -> EngineConfig {
    EngineConfig {
        max_connections: MAX,
        max_connections_per_source: PER_SOURCE,
        max_handshaking: HANDSHAKING,
        // Long enough that nothing here is closed for silence.
        idle_timeout: Duration::from_secs(60),
        heartbeat_interval: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        secret: secret.map(<[u8]>::to_vec),
        ..EngineConfig::default()
    }
}

/// One round of the good client: a fresh engine (so a fresh connection)
/// writes `LEN` bytes to the target and reads them back.
fn good_round(target: &str, remote: u64, secret: Option<&[u8]>, round: usize) -> Result<(), String> {
    let client = Engine::start(EngineConfig {
        connect_timeout: Duration::from_secs(10),
        secret: secret.map(<[u8]>::to_vec),
        ..EngineConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let local = client
        .alloc_memory(2 * LEN, Perm::LOCAL_ONLY)
        .map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..LEN).map(|i| pattern(round as u64, i)).collect();
    client.write_memory(local, &data).map_err(|e| e.to_string())?;
    client
        .transfer_sync_write(target, local, remote, LEN)
        .map_err(|e| format!("write: {e}"))?;
    client
        .transfer_sync_read(target, local + LEN, remote, LEN)
        .map_err(|e| format!("read: {e}"))?;
    let mut back = vec![0u8; LEN as usize];
    client
        .read_memory(local + LEN, &mut back)
        .map_err(|e| e.to_string())?;
    if back != data {
        return Err("bytes read back differ".into());
    }
    Ok(())
}

fn flood(secret: Option<&[u8]>) {
    let target = Engine::start(target_config(secret)).expect("target");
    let remote = target.alloc_memory(LEN, Perm::REMOTE_READ_WRITE).expect("alloc");
    let name = target.segment_name();
    let to = match name.parse::<SocketAddr>().expect("segment name is the address") {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("the target listens on IPv4 loopback"),
    };
    // Hogs: four sources, ten handshakes each (40 > MAX in all).
    let hogs: Vec<_> = (2..=5u8)
        .map(|n| thread::spawn(move || hog(Ipv4Addr::new(127, 0, 0, n), to, 10)))
        .collect();
    let held: Vec<Vec<TcpStream>> = hogs.into_iter().map(|h| h.join().expect("hog")).collect();
    for h in &held {
        let want = if secret.is_some() { 0 } else { PER_SOURCE };
        assert_eq!(h.len(), want, "established connections of one source");
    }
    // Parkers: four more sources, flooding the handshake.
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let parkers: Vec<_> = (6..=9u8)
        .map(|n| {
            let (stop, made) = (stop.clone(), made.clone());
            let send_hello = secret.is_some();
            thread::spawn(move || park(Ipv4Addr::new(127, 0, 0, n), to, send_hello, &stop, &made))
        })
        .collect();
    assert!(
        spin_until(WAIT, || made.load(Ordering::Relaxed) >= 8 * PER_SOURCE),
        "the parkers did not get going"
    );
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        if let Err(e) = good_round(&name, remote, secret, round) {
            failures.push(format!("round {round}: {e}"));
        }
    }
    let parked = made.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for p in parkers {
        p.join().expect("parker");
    }
    assert!(
        failures.is_empty(),
        "the good client was kept out ({parked} parked connections): {failures:?}"
    );
    assert!(parked > 8 * PER_SOURCE, "the handshake flood was real: {parked}");
    drop(held);
}

#[test]
fn a_good_client_gets_in_every_time_past_hogs_and_parked_handshakes() {
    flood(None);
}

#[test]
fn a_good_client_with_the_secret_gets_in_past_clients_that_cannot_prove_it() {
    flood(Some(b"the good secret"));
}

#[test]
fn a_client_trickling_a_frame_loses_its_slot_although_every_byte_is_activity() {
    let target = Engine::start(EngineConfig {
        idle_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(300),
        ..EngineConfig::default()
    })
    .expect("target");
    let mut s = TcpStream::connect(target.segment_name()).expect("connect");
    s.write_all(&hello(AUTH_NONE)).expect("hello");
    assert!(admitted_without_secret(&mut s), "handshake");
    // An InfoReq (40 bytes), one byte every 150 ms: never silent for the
    // idle timeout, but 6 s for the frame, far below 8 KiB/s.
    let frame = te_tests::encode(&Frame::InfoReq {
        req_id: 0x1_ff,
        after: None,
    });
    let started = std::time::Instant::now();
    let mut sent = 0;
    for b in &frame {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        sent += 1;
        // Pacing the trickle, not synchronisation.
        thread::sleep(Duration::from_millis(150));
    }
    assert!(sent < frame.len(), "the engine took the whole trickled frame");
    // What the engine said before closing: its Pings, then Error(0, Timeout).
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut dec = Decoder::new(16 << 20);
    let mut byte = [0u8; 1];
    let why = loop {
        match s.read(&mut byte) {
            Ok(1) => {}
            _ => break None,
        }
        dec.feed(&byte).expect("te frames");
        if dec.progress() != Progress::Frame {
            continue;
        }
        if let Some(Ok(Frame::Error { req_id: 0, code, msg })) = dec.frame() {
            break Some((code, msg.to_string()));
        }
        dec.next();
    };
    let (code, msg) = why.expect("the engine told why");
    assert_eq!(code, te_runtime::ErrorCode::Timeout, "{msg}");
    assert!(msg.contains("below the floor"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

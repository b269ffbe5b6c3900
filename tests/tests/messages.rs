//! Messages a user meets when a connection is refused (issue 16.4): a
//! secret mismatch says so and names the right side, a port that does not
//! speak te is reported as such at once, and nothing is cut mid-word.

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use te_proto::link::SECRET_MISMATCH;
use te_runtime::{Engine, EngineConfig, ErrorCode};

fn engine(name: &str, secret: Option<&str>) -> Engine {
    Engine::start(EngineConfig {
        segment_name: Some(name.into()),
        secret: secret.map(|s| s.as_bytes().to_vec()),
        connect_timeout: Duration::from_secs(5),
        ..EngineConfig::default()
    })
    .expect("engine")
}

/// The error of opening `target` (by its address) from a client with
/// `secret`.
fn open_error(target: &Engine, secret: Option<&str>) -> te_runtime::Status {
    let client = engine("the-client", secret);
    let addr = target.rpc_port();
    client
        .open_segment(&format!("127.0.0.1:{addr}"))
        .expect_err("refused")
}

#[test]
fn secret_mismatches_say_check_the_secret_and_which_side_has_none() {
    // What the client says, in its own words.
    let cases = [
        (
            Some("one"),
            Some("two"),
            "this side's and the peer's differ (\"the-server\")",
        ),
        (
            Some("one"),
            None,
            "this side has one, the peer none (\"the-server\")",
        ),
        (
            None,
            Some("two"),
            "this side has none, the peer one (\"the-server\")",
        ),
    ];
    for (client, server, names) in cases {
        let target = engine("the-server", server);
        let e = open_error(&target, client);
        assert_eq!(e.code(), ErrorCode::NotAuthorized, "{e}");
        let m = e.message();
        assert!(m.contains(SECRET_MISMATCH), "{client:?}/{server:?}: {m}");
        assert!(m.contains(names), "{client:?}/{server:?}: {m}");
        assert!(
            !m.contains("did not prove") && !m.contains("none is configured"),
            "{m}"
        );
        assert!(!e.is_cut(), "cut: {m}");
    }
}

#[test]
fn a_port_that_does_not_speak_te_is_reported_at_once() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    let banner = std::thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").expect("banner");
        // Hold the connection until the client gives up on it.
        let mut b = [0u8; 256];
        while std::io::Read::read(&mut s, &mut b).is_ok_and(|n| n > 0) {}
    });
    let client = engine("the-client", None);
    let t = Instant::now();
    let e = client.open_segment(&addr.to_string()).expect_err("not te");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}: {e}",
        t.elapsed()
    );
    assert!(e.message().contains("does not speak te"), "{e}");
    assert!(e.message().starts_with(&format!("segment {addr}: ")), "{e}");
    assert!(!e.is_cut(), "{e}");
    drop(client);
    banner.join().expect("server");
}

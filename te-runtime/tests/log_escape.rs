//! Log injection (issue 17.2): a peer's segment name and error message,
//! carrying a newline and an escape byte, reach the engine's log escaped,
//! never raw. The log is captured by a subscriber of this test binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use te_proto::wire::{Decoder, Frame, Hello, Progress, AUTH_NONE, MAX_CONTROL_LEN};
use te_proto::ErrorCode;
use te_runtime::{Engine, EngineConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

fn encode(f: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = f.encode(&mut buf).expect("encode");
    buf.truncate(n);
    buf
}

const FORGED: &str = "2026-12-02T00:00:00.000000Z  WARN te_runtime: forged";

#[test]
fn a_peers_name_and_message_with_newlines_and_escapes_are_logged_escaped() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let engine = Engine::start(EngineConfig::default()).expect("engine");
    let mut s = TcpStream::connect(engine.segment_name()).expect("connect");
    let name = format!("evil\n{FORGED} name\x1b[2J");
    let hello = Hello {
        caps: 0,
        max_payload: 1 << 20,
        max_outstanding: 8,
        auth: AUTH_NONE,
        host_id: [0; 32],
        nonce: [5; 32],
        mac: [0; 32],
        name: &name,
    };
    s.write_all(&encode(&Frame::Hello(hello))).expect("hello");
    // The HelloAck: the link is established (and logged with the name).
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut dec = Decoder::new(16 << 20);
    let mut byte = [0u8; 1];
    while dec.progress() == Progress::NeedMore {
        assert_eq!(s.read(&mut byte).expect("HelloAck"), 1);
        dec.feed(&byte).expect("a frame");
    }
    assert!(matches!(dec.frame(), Some(Ok(Frame::HelloAck(_)))));
    let msg = format!("bye\n{FORGED} message\x1b]0;title\x07");
    let bye = Frame::Error {
        req_id: 0,
        code: ErrorCode::RuntimeError,
        msg: &msg,
    };
    s.write_all(&encode(&bye)).expect("error");
    // Wait for the engine to log the close (bounded; no sleep).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.text().contains("peer closed: bye") {
        assert!(Instant::now() < deadline, "no close logged:\n{}", log.text());
        std::thread::yield_now();
    }
    let text = log.text();
    assert!(text.contains("link established"), "{text}");
    // The forged text stays inside the line that quotes it.
    assert!(
        !text.lines().any(|l| l.starts_with(FORGED)),
        "a forged line reached the log:\n{text}"
    );
    assert!(
        !text.contains('\x1b') && !text.contains('\x07'),
        "raw control bytes:\n{text:?}"
    );
    assert!(text.contains("evil\\n2026-12-02"), "{text}");
    assert!(text.contains("bye\\n2026-12-02"), "{text}");
    drop(engine);
}

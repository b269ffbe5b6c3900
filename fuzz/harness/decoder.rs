//! Fuzz harness for [`te_proto::wire::Decoder`].
//!
//! Input layout: byte 0 selects the decoder's payload limit (low two bits),
//! bytes 1 and 2 seed the piece sizes (0 feeds everything at once), the rest
//! is the byte stream. The harness drives the decoder like a shell: it feeds
//! pieces, reads each ready frame, calls `next`, and skips payloads with
//! `payload_consumed`. It checks that
//!
//! - the decoder never takes more than it is given and never stalls;
//! - every frame that decodes re-encodes ([`Frame::encode`]) to exactly the
//!   bytes it came from, and those decode to an equal frame (the wire form
//!   is canonical); a buffer one byte too small gives `BufferTooSmall`;
//! - header, frame and payload agree (opcode, payload length);
//! - an error poisons the decoder: every later `feed` returns it again.

use te_proto::wire::{
    Decoder, Frame, Progress, WireError, HEADER_LEN, MAX_BODY, MAX_CONTROL_LEN, MAX_PAYLOAD_LIMIT,
};

use super::Rng;

/// Payload limits selected by the low two bits of the first input byte.
pub const MAX_PAYLOADS: [u32; 4] = [4096, 65536, 1 << 20, MAX_PAYLOAD_LIMIT];

/// Piece sizes the generator picks from (the last one: whatever is left).
const PIECES: [usize; 8] = [1, 2, 3, 7, 16, 17, 255, usize::MAX];

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let seed = u16::from_be_bytes([
        data.get(1).copied().unwrap_or(0),
        data.get(2).copied().unwrap_or(0),
    ]);
    let stream = data.get(3..).unwrap_or(&[]);
    let max_payload = MAX_PAYLOADS[usize::from(mode & 3)];
    let mut rng = Rng::new(u64::from(seed));
    let mut piece = || {
        if seed == 0 {
            usize::MAX
        } else {
            PIECES[(rng.next() % PIECES.len() as u64) as usize]
        }
    };

    let mut dec = Decoder::new(max_payload);
    assert_eq!(dec.progress(), Progress::NeedMore);
    assert_eq!(dec.feed(&[]), Ok(0));
    let mut at = 0;
    // Start of the current frame's header in `stream`.
    let mut frame_start = 0;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(
            steps <= 4 * stream.len() + 16,
            "decoder makes no progress at byte {at}"
        );
        match dec.progress() {
            Progress::NeedMore => {
                if at == stream.len() {
                    break;
                }
                let end = at.saturating_add(piece()).min(stream.len());
                let input = &stream[at..end];
                match dec.feed(input) {
                    Ok(n) => {
                        assert!(n <= input.len(), "feed took {n} of {} bytes", input.len());
                        if n < input.len() {
                            assert_ne!(
                                dec.progress(),
                                Progress::NeedMore,
                                "feed stopped early for no reason"
                            );
                        }
                        at += n;
                    }
                    Err(e) => {
                        check_poisoned(&mut dec, e);
                        break;
                    }
                }
            }
            Progress::Frame => {
                let header = *dec.header().expect("a ready frame has a header");
                let body_len = header.body_len.get() as usize;
                assert!(body_len <= MAX_BODY);
                assert_eq!(
                    at - frame_start,
                    HEADER_LEN + body_len,
                    "frame bytes do not match its header"
                );
                let raw = &stream[frame_start..at];
                let payload = header.payload_len.get();
                assert!(payload <= max_payload.min(MAX_PAYLOAD_LIMIT));
                let result = dec.frame().expect("progress says a frame is ready");
                match result {
                    Ok(frame) => {
                        assert_eq!(frame.opcode() as u8, header.opcode);
                        match frame {
                            Frame::ReadData { len, .. } | Frame::WriteData { len, .. } => {
                                assert_eq!(len, payload);
                                assert!(len > 0);
                            }
                            _ => assert_eq!(payload, 0, "{frame:?} with a payload"),
                        }
                        round_trip(&frame, raw, max_payload);
                    }
                    Err(e) => {
                        check_poisoned(&mut dec, e);
                        break;
                    }
                }
                dec.next();
                let want = if payload > 0 {
                    Progress::Payload(payload)
                } else {
                    Progress::NeedMore
                };
                assert_eq!(dec.progress(), want);
                assert!(dec.header().is_none());
                if payload == 0 {
                    frame_start = at;
                }
            }
            Progress::Payload(left) => {
                assert!(left > 0);
                if at == stream.len() {
                    // The stream ends inside a payload: consuming more than
                    // is due is clamped.
                    dec.payload_consumed(u32::MAX);
                    assert_eq!(dec.progress(), Progress::NeedMore);
                    break;
                }
                // Nothing but payload is taken while payload is due.
                assert_eq!(dec.feed(&stream[at..]), Ok(0));
                dec.payload_consumed(0);
                assert_eq!(dec.progress(), Progress::Payload(left));
                let n = piece().min(left as usize).min(stream.len() - at);
                dec.payload_consumed(n as u32);
                at += n;
                let rest = left - n as u32;
                let want = if rest > 0 {
                    Progress::Payload(rest)
                } else {
                    Progress::NeedMore
                };
                assert_eq!(dec.progress(), want);
                if rest == 0 {
                    frame_start = at;
                }
            }
        }
    }
}

/// After an error every `feed` returns that error, whatever it is given.
fn check_poisoned(dec: &mut Decoder, e: WireError) {
    assert_eq!(dec.error(), Some(e));
    assert_eq!(dec.feed(b"TE"), Err(e));
    assert_eq!(dec.feed(&[]), Err(e));
    // The message of every error renders (and never panics).
    let mut s = String::new();
    core::fmt::write(&mut s, format_args!("{e}")).expect("error renders");
    assert!(!s.is_empty());
    let _ = e.to_status();
}

/// A decoded frame re-encodes to the bytes it came from, which decode to an
/// equal frame; too small a buffer is an error, not a panic.
fn round_trip(frame: &Frame<'_>, raw: &[u8], max_payload: u32) {
    let mut buf = [0u8; MAX_CONTROL_LEN];
    let n = frame
        .encode(&mut buf)
        .unwrap_or_else(|e| panic!("decoded {frame:?} does not re-encode: {e}"));
    assert_eq!(&buf[..n], raw, "{frame:?} re-encodes to other bytes");
    let mut again = Decoder::new(max_payload);
    assert_eq!(again.feed(&buf[..n]), Ok(n));
    assert_eq!(again.progress(), Progress::Frame);
    match again.frame() {
        Some(Ok(f)) => assert_eq!(f, *frame),
        other => panic!("re-encoded {frame:?} decodes to {other:?}"),
    }
    let mut small = [0u8; MAX_CONTROL_LEN];
    match frame.encode(&mut small[..n - 1]) {
        Err(WireError::BufferTooSmall { .. }) => {}
        other => panic!("encoding {frame:?} into {} bytes gave {other:?}", n - 1),
    }
    if let Frame::InfoReply { regions, .. } = frame {
        assert_eq!(
            regions.iter().count(),
            regions.len(),
            "an InfoReply entry did not revalidate"
        );
    }
}

//! The incremental frame decoder.

use zerocopy::{FromBytes, FromZeros};

use super::error::WireError;
use super::frame::Frame;
use super::header::{Header, HEADER_LEN};
use super::MAX_BODY;

/// Where the decoder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// It needs more header or body bytes.
    NeedMore,
    /// A whole header and body are buffered: read it with
    /// [`Decoder::frame`], then call [`Decoder::next`].
    Frame,
    /// This many payload bytes of the current frame are still to come; they
    /// bypass the decoder (see [`Decoder::payload_consumed`]).
    Payload(u32),
}

/// Turns a byte stream, fed in pieces of any size, into frames.
///
/// Header and body are buffered (at most [`MAX_BODY`](super::MAX_BODY) +
/// 16 bytes); payloads are not: the decoder only counts them. Any error
/// poisons the decoder, since the stream can no longer be framed.
#[derive(Clone, Debug)]
pub struct Decoder {
    max_payload: u32,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    parsed: Option<Header>,
    body: heapless::Vec<u8, MAX_BODY>,
    payload_left: u32,
    /// Bytes of the frame in progress (header, body and payload), once its
    /// header is in; kept while its payload arrives.
    frame_len: u64,
    /// Frames begun so far: a new one starts with its first header byte.
    frames: u64,
    failed: Option<WireError>,
}

impl Decoder {
    /// A decoder that accepts payloads of up to `max_payload` bytes.
    pub fn new(max_payload: u32) -> Decoder {
        Decoder {
            max_payload,
            header: [0; HEADER_LEN],
            header_filled: 0,
            parsed: None,
            body: heapless::Vec::new(),
            payload_left: 0,
            frame_len: 0,
            frames: 0,
            failed: None,
        }
    }

    /// Where the decoder stands.
    pub fn progress(&self) -> Progress {
        if self.payload_left > 0 {
            Progress::Payload(self.payload_left)
        } else if self.frame_ready() {
            Progress::Frame
        } else {
            Progress::NeedMore
        }
    }

    fn frame_ready(&self) -> bool {
        self.parsed
            .is_some_and(|h| self.body.len() == h.body_len.get() as usize)
    }

    /// Consumes header and body bytes from `input` and returns how many it
    /// took. It stops at the end of a frame's body (so that the frame is
    /// handled before its payload) and takes nothing while a frame is ready
    /// or payload bytes are due.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.payload_left > 0 || self.frame_ready() {
            return Ok(0);
        }
        let mut used = 0;
        if self.parsed.is_none() {
            if self.header_filled == 0 && !input.is_empty() {
                self.frames += 1;
            }
            let take = (HEADER_LEN - self.header_filled).min(input.len());
            self.header[self.header_filled..self.header_filled + take].copy_from_slice(&input[..take]);
            self.header_filled += take;
            used = take;
            if self.header_filled < HEADER_LEN {
                return Ok(used);
            }
            // The array is exactly one header long, so this read cannot fail.
            let header = Header::read_from_bytes(&self.header);
            debug_assert!(header.is_ok(), "a header array of the wrong size");
            let header = header.unwrap_or_else(|_| Header::new_zeroed());
            header.validate(self.max_payload).map_err(|e| self.fail(e))?;
            self.frame_len =
                HEADER_LEN as u64 + u64::from(header.body_len.get()) + u64::from(header.payload_len.get());
            self.parsed = Some(header);
            self.body.clear();
        }
        let want = self.parsed.map_or(0, |h| h.body_len.get() as usize);
        let rest = &input[used..];
        let take = (want - self.body.len()).min(rest.len());
        // validate() bounded body_len by MAX_BODY, the buffer's capacity.
        debug_assert!(want <= MAX_BODY, "a validated body of {want} bytes");
        self.body.extend_from_slice(&rest[..take]).map_err(|_| {
            self.fail(WireError::BufferTooSmall {
                need: want,
                have: MAX_BODY,
            })
        })?;
        used += take;
        Ok(used)
    }

    fn fail(&mut self, e: WireError) -> WireError {
        self.failed = Some(e);
        e
    }

    /// The buffered frame, when [`progress`](Self::progress) is
    /// [`Progress::Frame`]; a frame that does not decode poisons the decoder.
    pub fn frame(&mut self) -> Option<Result<Frame<'_>, WireError>> {
        if !self.frame_ready() {
            return None;
        }
        let header = self.parsed?;
        let result = Frame::decode(&header, &self.body);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        Some(result)
    }

    /// The header of the buffered frame, if any.
    pub fn header(&self) -> Option<&Header> {
        self.parsed.as_ref()
    }

    /// Done with the buffered frame: expect its payload, if it has one, or
    /// the next header.
    pub fn next(&mut self) {
        if let Some(h) = self.parsed.take() {
            self.payload_left = h.payload_len.get();
        }
        self.header_filled = 0;
        self.body.clear();
    }

    /// Records that `n` payload bytes went past the decoder (clamped to the
    /// bytes still due).
    pub fn payload_consumed(&mut self, n: u32) {
        self.payload_left -= n.min(self.payload_left);
    }

    /// The frame the peer has begun and not finished sending: its number
    /// (frames are counted from 1 as their first byte arrives) and its
    /// length in bytes (header, body and payload; 16 while the header is
    /// incomplete). `None` between frames and while a whole header and body
    /// wait to be handled ([`Progress::Frame`]): then nothing is owed by
    /// the peer.
    pub fn frame_in_progress(&self) -> Option<(u64, u64)> {
        if self.failed.is_some() || self.frame_ready() {
            return None;
        }
        if self.payload_left > 0 || self.parsed.is_some() {
            return Some((self.frames, self.frame_len));
        }
        (self.header_filled > 0).then_some((self.frames, HEADER_LEN as u64))
    }

    /// The error that poisoned the decoder, if any.
    pub fn error(&self) -> Option<WireError> {
        self.failed
    }
}

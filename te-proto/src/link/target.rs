//! The target half of a link: the peer's requests checked against the
//! registry, the answers owed, the peer's write whose payload is landing,
//! the answer whose payload is being sent, and the revocation of answers
//! whose region started draining.
//!
//! Admission (request id, the limit of requests in flight) is the link's:
//! the limit counts the same-host copies too, which the other half holds.

use heapless::Deque;

use super::config::MAX_OUTSTANDING;
use super::event::PayloadDest;
use crate::error::Status;
use crate::location::Location;
use crate::region::{Perm, Span};
use crate::registry::{Entry, PinKey, Registry};
use crate::status;
use crate::wire::{encode_info_reply, Frame};

/// Room for every answer owed: the peer's requests admitted (at most
/// `max_outstanding`, at most [`MAX_OUTSTANDING`]) plus the answer being
/// sent when its payload turns out unreadable and becomes an `Error` (the
/// peer may already have used the room it left).
pub(super) const ANSWERS: usize = MAX_OUTSTANDING + 1;

/// An answer waiting to be sent.
#[derive(Clone, Debug)]
pub(super) enum Response {
    /// Send `span` (pinned by `pin`) as the answer to a read.
    Read { req_id: u64, span: Span, pin: PinKey },
    /// A write (or a same-host copy) was applied.
    Ack { req_id: u64 },
    /// A request failed.
    Fail { req_id: u64, status: Status },
    /// A page of the segment info, starting after `after`.
    Info {
        req_id: u64,
        after: Option<(Location, u64)>,
    },
}

/// The peer's write whose payload is arriving: into `span` when `pin` is
/// set, else dropped and answered with `error`.
#[derive(Clone, Debug)]
struct Landing {
    req_id: u64,
    span: Span,
    pin: Option<PinKey>,
    error: Option<Status>,
    landed: u64,
}

/// The answer to the peer's read `req_id` whose payload the shell is
/// sending; the region stays pinned until it is sent. `frame` is the length
/// of the `ReadData` frame, the end of the transmit that named the payload.
#[derive(Clone, Copy, Debug)]
struct Sending {
    req_id: u64,
    pin: PinKey,
    frame: usize,
}

/// The target half. See the [module docs](self).
pub(super) struct Target {
    responses: Deque<Response, ANSWERS>,
    landing: Option<Landing>,
    sending: Option<Sending>,
}

type Reg<S> = Registry<S>;

impl Target {
    pub fn new() -> Target {
        Target {
            responses: Deque::new(),
            landing: None,
            sending: None,
        }
    }

    /// The peer's requests admitted and not answered yet (same-host copies
    /// aside): queued answers and the write landing.
    pub fn busy(&self) -> usize {
        self.responses.len() + usize::from(self.landing.is_some())
    }

    /// Whether answers are queued.
    pub fn has_answers(&self) -> bool {
        !self.responses.is_empty()
    }

    /// Whether an answer's payload is being sent.
    pub fn is_sending(&self) -> bool {
        self.sending.is_some()
    }

    /// Whether the peer's write is landing.
    pub fn is_landing(&self) -> bool {
        self.landing.is_some()
    }

    /// Queues an answer to a request the link admitted (or whose copy ended).
    pub fn answer(&mut self, r: Response) {
        let queued = self.responses.push_back(r);
        debug_assert!(queued.is_ok(), "an answer beyond the admitted requests");
    }

    /// The peer's `ReadReq`, admitted: checked and pinned, or refused.
    pub fn on_read<S>(
        &mut self,
        req_id: u64,
        addr: u64,
        location: Option<Location>,
        len: u32,
        reg: &mut Reg<S>,
    ) where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let r = match reg.pin_remote(addr, len as u64, location, Perm::REMOTE_READ) {
            Ok(pin) => Response::Read {
                req_id,
                span: Span {
                    addr,
                    len: len as u64,
                    location: pin.location,
                },
                pin,
            },
            Err(status) => Response::Fail { req_id, status },
        };
        self.answer(r);
    }

    /// The peer's `WriteData`, admitted: its payload lands in the checked
    /// and pinned span, or is dropped and refused.
    pub fn on_write<S>(
        &mut self,
        req_id: u64,
        addr: u64,
        location: Option<Location>,
        len: u32,
        reg: &mut Reg<S>,
    ) where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        // A frame is handled only after the payload before it landed.
        debug_assert!(self.landing.is_none(), "a write landing over another");
        let len = len as u64;
        self.landing = Some(match reg.pin_remote(addr, len, location, Perm::REMOTE_WRITE) {
            Ok(pin) => Landing {
                req_id,
                span: Span {
                    addr,
                    len,
                    location: pin.location,
                },
                pin: Some(pin),
                error: None,
                landed: 0,
            },
            Err(e) => Landing {
                req_id,
                span: Span::cpu(addr, len),
                pin: None,
                error: Some(e),
                landed: 0,
            },
        });
    }

    /// Where the next `left` bytes of the landing write go.
    pub fn landing_dest(&self, left: u64) -> Option<PayloadDest> {
        let l = self.landing.as_ref()?;
        Some(match l.pin {
            Some(_) => PayloadDest::Memory(l.span.slice(l.landed, left)),
            None => PayloadDest::Discard(left),
        })
    }

    /// `n` more bytes of the write landed.
    pub fn landed(&mut self, n: u64) {
        if let Some(l) = self.landing.as_mut() {
            l.landed += n;
        }
    }

    /// The write's payload is in: its pin is released and its answer queued.
    pub fn finish_landing<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let Some(l) = self.landing.take() else { return };
        if let Some(pin) = l.pin {
            reg.unpin(pin);
        }
        let req_id = l.req_id;
        // Admitted when it arrived; it moves from the landing to the queue.
        self.answer(match l.error {
            None => Response::Ack { req_id },
            Some(status) => Response::Fail { req_id, status },
        });
    }

    /// The landing write cannot be placed: the rest is discarded and the
    /// write refused with `why`.
    pub fn landing_failed<S>(&mut self, why: Status, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if let Some(l) = self.landing.as_mut() {
            if let Some(pin) = l.pin.take() {
                reg.unpin(pin);
            }
            l.error.get_or_insert(why);
        }
    }

    /// Turns the queued answers to reads of draining regions into
    /// `NotAuthorized` errors, releasing their pins; returns how many.
    pub fn revoke_draining<S>(&mut self, reg: &mut Reg<S>) -> usize
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let mut n = 0;
        for r in self.responses.iter_mut() {
            let Response::Read { req_id, span, pin } = *r else {
                continue;
            };
            if !reg.is_draining(pin) {
                continue;
            }
            reg.unpin(pin);
            let status = status!(
                NotAuthorized,
                "read of {:#x}+{:#x} in {}: region {:#x} was unregistered before the answer was sent",
                span.addr,
                span.len,
                span.location,
                pin.base
            );
            *r = Response::Fail { req_id, status };
            n += 1;
        }
        n
    }

    /// Encodes the oldest answer into `out`; a read's answer names its
    /// payload, which is then being sent.
    pub fn encode_answer<S>(&mut self, out: &mut [u8], reg: &Reg<S>) -> Option<(usize, Option<Span>)>
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let (n, payload) = match self.responses.front()? {
            Response::Read { req_id, span, pin } => {
                let n = Frame::ReadData {
                    req_id: *req_id,
                    len: span.len as u32,
                }
                .encode(out)
                .ok()?;
                debug_assert!(self.sending.is_none(), "two answers' payloads at once");
                self.sending = Some(Sending {
                    req_id: *req_id,
                    pin: *pin,
                    frame: n,
                });
                (n, Some(*span))
            }
            Response::Ack { req_id } => (Frame::WriteAck { req_id: *req_id }.encode(out).ok()?, None),
            Response::Fail { req_id, status } => {
                let f = Frame::Error {
                    req_id: *req_id,
                    code: status.code(),
                    msg: status.message(),
                };
                (f.encode(out).ok()?, None)
            }
            Response::Info { req_id, after } => {
                let (n, _) = encode_info_reply(out, *req_id, reg.remote_regions_after(*after)).ok()?;
                (n, None)
            }
        };
        self.responses.pop_front();
        Some((n, payload))
    }

    /// The answer's payload was sent: its pin is released.
    pub fn payload_sent<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if let Some(s) = self.sending.take() {
            reg.unpin(s.pin);
        }
    }

    /// The answer's payload cannot be read: it becomes an `Error` carrying
    /// `why`, first in the queue (unless `closed`: a closed link answers
    /// nothing). Returns the length of its `ReadData` frame, `None` when
    /// no answer's payload is being sent.
    pub fn payload_unavailable<S>(&mut self, why: Status, closed: bool, reg: &mut Reg<S>) -> Option<usize>
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let s = self.sending.take()?;
        reg.unpin(s.pin);
        if !closed {
            let fail = Response::Fail {
                req_id: s.req_id,
                status: why,
            };
            // ANSWERS keeps room for it.
            let queued = self.responses.push_front(fail);
            debug_assert!(queued.is_ok(), "no room for the refused answer");
        }
        Some(s.frame)
    }

    /// The link closed: every answer owed is dropped and its pin released,
    /// the landing write's too. An answer being sent keeps its pin until
    /// [`payload_sent`](Self::payload_sent).
    pub fn close<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        while let Some(r) = self.responses.pop_front() {
            if let Response::Read { pin, .. } = r {
                reg.unpin(pin);
            }
        }
        if let Some(Landing { pin: Some(pin), .. }) = self.landing.take() {
            reg.unpin(pin);
        }
    }
}

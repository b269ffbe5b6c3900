//! Frames to send, in priority order: `Hello`/`HelloAck` (an acceptor that
//! refuses the connector's secret still sends its `HelloAck`, before the
//! `Error`), the closing `Error` or `Goodbye`, `Auth`, heartbeats, the
//! segment-info query, the same-host challenge, the RDMA offer or answer,
//! notifications, same-host buffer announcements, then
//! answers and requests alternately.

use super::state::{Phase, Reg, Role, State, Writing};
use super::tasks::NextChunk;
use crate::batch::Op;
use crate::error::ErrorCode;
use crate::region::Span;
use crate::registry::Entry;
use crate::wire::{Frame, LocalAccess};

/// The token of a keepalive `Pong`, sent unasked while the peer's payload
/// arrives (docs/PROTOCOL.md 11.1); this side's `Ping`s never use it.
pub(super) const KEEPALIVE_TOKEN: u64 = 0;

impl State {
    /// Mirrors `next_frame`: handshake frames go out in any phase, the
    /// rest only once the link is established.
    pub(super) fn has_frames_due(&self) -> bool {
        if self.due.hello || self.due.auth.is_some() {
            return true;
        }
        self.phase == Phase::Established
            && (self.due.pong.is_some()
                || self.due.ping
                || self.due.keepalive
                || (self.due.info.is_some() && self.window_has_room())
                || !self.notify_out.is_empty()
                || self.same_host.has_frames_due()
                || self.rdma.has_frame_due()
                || self.target.has_answers()
                || self
                    .tasks
                    .peek_next(self.data_window(), self.send_payload_max())
                    .is_some())
    }

    /// Encodes the next frame due into `out`; `None` when nothing is due or
    /// it does not fit.
    pub(super) fn next_frame<S>(&mut self, out: &mut [u8], reg: &Reg<S>) -> Option<(usize, Option<Span>)>
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        // A refusing acceptor's `HelloAck` precedes its `Error`
        // (handshake.rs); `shut` clears `hello` in every other case.
        if self.due.hello {
            let h = self.hello();
            let f = if self.role == Role::Connector {
                Frame::Hello(h)
            } else {
                Frame::HelloAck(h)
            };
            let n = f.encode(out).ok()?;
            self.due.hello = false;
            return Some((n, None));
        }
        if let Some(st) = &self.due.link_error {
            let n = Frame::Error {
                req_id: 0,
                code: st.code(),
                msg: st.message(),
            }
            .encode(out)
            .ok()?;
            self.due.link_error = None;
            return Some((n, None));
        }
        if self.phase == Phase::Closed {
            if self.due.goodbye {
                let n = Frame::Goodbye { code: ErrorCode::Ok }.encode(out).ok()?;
                self.due.goodbye = false;
                return Some((n, None));
            }
            return None;
        }
        if let Some(mac) = self.due.auth {
            let n = Frame::Auth { mac }.encode(out).ok()?;
            self.due.auth = None;
            return Some((n, None));
        }
        if self.phase != Phase::Established {
            return None;
        }
        if let Some(token) = self.due.pong {
            let n = Frame::Pong { token }.encode(out).ok()?;
            self.due.pong = None;
            return Some((n, None));
        }
        if self.due.keepalive {
            let n = Frame::Pong {
                token: KEEPALIVE_TOKEN,
            }
            .encode(out)
            .ok()?;
            self.due.keepalive = false;
            return Some((n, None));
        }
        if self.due.ping {
            let token = self.ping_seq + 1;
            let n = Frame::Ping { token }.encode(out).ok()?;
            self.ping_seq = token;
            self.due.ping = false;
            self.ping_outstanding = Some(token);
            return Some((n, None));
        }
        if let Some((req_id, after)) = self.due.info.filter(|_| self.window_has_room()) {
            let n = Frame::InfoReq { req_id, after }.encode(out).ok()?;
            self.due.info = None;
            return Some((n, None));
        }
        if let Some(c) = self.same_host.challenge_due() {
            let n = Frame::PidChallenge {
                token: c.token,
                socket: &c.socket,
            }
            .encode(out)
            .ok()?;
            self.same_host.challenge_sent();
            return Some((n, None));
        }
        if let Some(m) = self.rdma.due() {
            let n = Frame::RdmaConn(m).encode(out).ok()?;
            self.rdma.sent();
            return Some((n, None));
        }
        if let Some(note) = self.notify_out.front() {
            let name = note.name.as_str();
            let n = Frame::Notify { name, msg: &note.msg }.encode(out).ok()?;
            self.notify_out.pop_front();
            return Some((n, None));
        }
        // Before any request: the peer must know a buffer before the first
        // request using it, and forget it before any later one.
        if let Some(m) = self.same_host.map_due() {
            let n = Frame::LocalMap(m).encode(out).ok()?;
            self.same_host.map_sent(m);
            return Some((n, None));
        }
        if let Some(k) = self.same_host.key_due() {
            let n = Frame::LocalKey(k).encode(out).ok()?;
            self.same_host.key_sent(k);
            return Some((n, None));
        }
        if let Some(k) = self.rdma.key_due() {
            let n = Frame::RdmaKey(k).encode(out).ok()?;
            self.rdma.key_sent(k);
            return Some((n, None));
        }
        if let Some(id) = self.rdma.closed_due() {
            let n = Frame::RdmaKeyClosed { id }.encode(out).ok()?;
            self.rdma.closed_sent(id);
            return Some((n, None));
        }
        if let Some(id) = self.same_host.key_closed_due() {
            let n = Frame::KeyClosed { id }.encode(out).ok()?;
            self.same_host.key_closed_sent(id);
            return Some((n, None));
        }
        let next = self.tasks.peek_next(self.data_window(), self.send_payload_max());
        let answer_first = !self.prefer_requests || next.is_none();
        if answer_first && self.target.has_answers() {
            self.prefer_requests = true;
            return self.target.encode_answer(out, reg);
        }
        let next = next?;
        self.prefer_requests = false;
        self.encode_request(out, &next)
    }

    fn encode_request(&mut self, out: &mut [u8], next: &NextChunk) -> Option<(usize, Option<Span>)> {
        let req_id = (self.seq + 1) << 8 | next.chunk as u64;
        let access = LocalAccess {
            req_id,
            addr: next.remote_addr,
            location: next.remote_location,
            len: next.len,
            peer_addr: next.local.addr,
            peer_device: next.by_copy && !next.local.location.is_host(),
        };
        let (frame, payload) = match next.op {
            op if next.by_copy => (Frame::local(op == Op::Read, access), None),
            Op::Read => (
                Frame::ReadReq {
                    req_id,
                    addr: next.remote_addr,
                    location: next.remote_location,
                    len: next.len,
                },
                None,
            ),
            Op::Write => (
                Frame::WriteData {
                    req_id,
                    addr: next.remote_addr,
                    location: next.remote_location,
                    len: next.len,
                },
                Some(next.local),
            ),
        };
        let n = frame.encode(out).ok()?;
        self.seq += 1;
        self.tasks.commit(next, req_id);
        if payload.is_some() {
            debug_assert!(self.writing.is_none(), "two writes' payloads at once");
            self.writing = Some(Writing {
                slot: next.slot,
                chunk: next.chunk,
                frame: n,
            });
        }
        Some((n, payload))
    }
}

//! Frames received: the phase rules of docs/PROTOCOL.md 7.1, then each
//! frame handed to the half that owns what it is about.

use super::config::Caps;
use super::event::{Notification, PidChallenge};
use super::state::{Phase, Reading, Reg, State};
use crate::batch::Op;
use crate::error::ErrorCode;
use crate::registry::Entry;
use crate::status;
use crate::text::Escaped;
use crate::wire::{Frame, LocalAccess};

impl State {
    /// Handles one decoded frame.
    pub(super) fn dispatch<S>(&mut self, frame: Frame<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        match (self.phase, frame) {
            // Only the shared secret makes a connector refuse an acceptor's
            // `HelloAck` with NotAuthorized: this side says so in its own
            // words rather than in the peer's.
            (
                Phase::AwaitAuth,
                Frame::Error {
                    req_id: 0,
                    code: ErrorCode::NotAuthorized,
                    ..
                },
            ) => {
                let why = super::handshake::secrets_differ(self.peer_name());
                self.shut(why, false, reg)
            }
            (_, Frame::Error { req_id: 0, code, msg }) => {
                self.shut(status!(=code, "peer closed: {}", Escaped(msg)), false, reg)
            }
            (_, Frame::Goodbye { code }) => {
                self.shut(status!(Disconnected, "peer said goodbye ({code})"), false, reg)
            }
            (Phase::AwaitHello, Frame::Hello(h)) => self.on_hello(&h, reg),
            (Phase::AwaitHelloAck, Frame::HelloAck(h)) => self.on_hello_ack(&h, reg),
            (Phase::AwaitAuth, Frame::Auth { mac }) => self.on_auth(&mac, reg),
            (Phase::Established, f) => self.on_frame(f, reg),
            (phase, f) => self.violation(
                reg,
                format_args!("unexpected {:?} frame in phase {phase:?}", f.opcode()),
            ),
        }
    }

    /// Admits a new request from the peer: its id must not be 0 (reserved
    /// for the link) and it must fit the limit of requests in flight, which
    /// counts the answers owed by both halves.
    fn request_room<S>(&mut self, req_id: u64, reg: &mut Reg<S>) -> bool
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if req_id == 0 {
            self.violation(reg, format_args!("request id 0 is reserved for the link"));
            return false;
        }
        let busy = self.target.busy() + self.same_host.busy();
        if busy >= self.cfg.max_outstanding as usize {
            let limit = self.cfg.max_outstanding;
            self.violation(
                reg,
                format_args!("peer exceeded the limit of {limit} requests in flight"),
            );
            return false;
        }
        true
    }

    fn on_frame<S>(&mut self, frame: Frame<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.peer_acted |= !matches!(frame, Frame::Ping { .. } | Frame::Pong { .. });
        match frame {
            Frame::ReadReq {
                req_id,
                addr,
                location,
                len,
            } => {
                if !self.request_room(req_id, reg) {
                    return;
                }
                // The answer carries `len` bytes: more than either side's
                // max_payload would break the initiator's own limit.
                let max = self.send_payload_max();
                if len > max {
                    return self.violation(
                        reg,
                        format_args!("read of {len} bytes exceeds max payload {max} of this link"),
                    );
                }
                self.target.on_read(req_id, addr, location, len, reg);
            }
            Frame::WriteData {
                req_id,
                addr,
                location,
                len,
            } => {
                if self.request_room(req_id, reg) {
                    debug_assert!(self.reading.is_none(), "a write landing over an answer");
                    self.target.on_write(req_id, addr, location, len, reg);
                }
            }
            Frame::ReadData { req_id, len } => match self.tasks.chunk(req_id) {
                Some((idx, c)) if c.op == Op::Read && !c.by_copy && c.len == len => {
                    // A frame is handled only after the payload before it landed.
                    debug_assert!(
                        self.reading.is_none() && !self.target.is_landing(),
                        "an answer landing over another payload"
                    );
                    self.reading = Some(Reading {
                        chunk: idx,
                        landed: 0,
                    })
                }
                _ => self.violation(
                    reg,
                    format_args!("ReadData of {len} bytes answers no read {req_id:#x}"),
                ),
            },
            Frame::WriteAck { req_id } => match self.tasks.chunk(req_id) {
                Some((idx, c)) if c.op == Op::Write || c.by_copy => self.tasks.complete(idx),
                _ => self.violation(reg, format_args!("WriteAck answers no write {req_id:#x}")),
            },
            Frame::Error { req_id, code, msg } => {
                let st = status!(=code, "{}", Escaped(msg));
                if self.info.awaits(req_id) && self.due.info.is_none() {
                    self.info.refused(st);
                } else if let Some((idx, _)) = self.tasks.chunk(req_id) {
                    self.tasks.failed(idx, st);
                } else {
                    self.violation(reg, format_args!("Error answers no request {req_id:#x}"));
                }
            }
            Frame::Notify { name, msg } => match Notification::new(name, msg) {
                Ok(n) => {
                    // handle_input() only dispatches a Notify when the inbox has room.
                    let queued = self.inbox.push_back(n);
                    debug_assert!(queued.is_ok(), "a notification dispatched into a full inbox");
                }
                Err(e) => {
                    debug_assert!(false, "the decoder let through a bad notification: {e}");
                    self.shut(e, true, reg)
                }
            },
            Frame::InfoReq { req_id, after } => {
                if self.request_room(req_id, reg) {
                    self.target
                        .answer(super::target::Response::Info { req_id, after });
                }
            }
            Frame::InfoReply {
                req_id,
                more,
                regions,
            } => {
                if !self.info.awaits(req_id) || self.due.info.is_some() {
                    return self.violation(reg, format_args!("InfoReply answers no query {req_id:#x}"));
                }
                if let Err(why) = self.info.on_page(more, regions.entries()) {
                    self.shut(why, true, reg);
                }
            }
            Frame::PidChallenge { token, socket } => match PidChallenge::new(token, socket) {
                Ok(_) if self.same_host.challenged() => {
                    self.violation(reg, format_args!("a second PidChallenge on this link"))
                }
                Ok(c) => self.same_host.on_challenge(c),
                Err(e) => {
                    debug_assert!(false, "the decoder let through a bad challenge: {e}");
                    self.shut(e, true, reg)
                }
            },
            Frame::LocalRead(a) => self.on_copy(Op::Read, a, reg),
            Frame::LocalWrite(a) => self.on_copy(Op::Write, a, reg),
            Frame::LocalMap(m) => {
                if !self.cfg.caps.contains(Caps::SHARED_MEMORY) {
                    return self.violation(
                        reg,
                        format_args!(
                            "peer announced buffer {:#x} with LocalMap; this side does not map buffers",
                            m.id
                        ),
                    );
                }
                if let Err(why) = self.same_host.on_map(m) {
                    self.shut(why, true, reg);
                }
            }
            Frame::LocalKey(k) => {
                if !self.cfg.caps.contains(Caps::DEVICE_IPC) {
                    return self.violation(
                        reg,
                        format_args!(
                            "peer announced device buffer {:#x} with LocalKey; this side does not import keys",
                            k.id
                        ),
                    );
                }
                if let Err(why) = self.same_host.on_key(k) {
                    self.shut(why, true, reg);
                }
            }
            Frame::KeyClosed { id } => {
                if let Err(why) = self.same_host.on_key_closed(id) {
                    self.shut(why, true, reg);
                }
            }
            Frame::RdmaConn(m) => self.on_rdma(m, reg),
            Frame::RdmaKey(k) => {
                if !self.rdma.ready() {
                    return self.violation(
                        reg,
                        format_args!(
                            "peer announced RDMA region {:#x} before both sides gave queue pairs",
                            k.id
                        ),
                    );
                }
                if let Err(why) = self.rdma.on_key(k, &mut self.tasks) {
                    self.shut(why, true, reg);
                }
            }
            Frame::RdmaKeyClosed { id } => {
                if let Err(why) = self.rdma.on_key_closed(id) {
                    self.shut(why, true, reg);
                }
            }
            Frame::Ping { token } => match self.due.pong {
                // The sender keeps at most one Ping unanswered: this one
                // came before the answer to the last one was even sent.
                Some(prev) => self.violation(
                    reg,
                    format_args!("Ping {token:#x} while Ping {prev:#x} is unanswered"),
                ),
                None => self.due.pong = Some(token),
            },
            Frame::Pong { token } => {
                if self.ping_outstanding == Some(token) {
                    self.ping_outstanding = None;
                }
            }
            f @ (Frame::Hello(_) | Frame::HelloAck(_) | Frame::Auth { .. } | Frame::Goodbye { .. }) => self
                .violation(
                    reg,
                    format_args!("unexpected {:?} frame after the handshake", f.opcode()),
                ),
        }
    }

    /// The peer's same-host request: admitted and bounded here, then the
    /// same-host half checks, pins and queues it.
    fn on_copy<S>(&mut self, op: Op, a: LocalAccess, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if !self.request_room(a.req_id, reg) {
            return;
        }
        if a.len > self.cfg.max_payload {
            let (len, max) = (a.len, self.cfg.max_payload);
            return self.violation(reg, format_args!("copy of {len} bytes exceeds max payload {max}"));
        }
        let offered = self.cfg.caps.contains(Caps::PROCESS_VM);
        self.same_host.on_copy(op, a, offered, &mut self.target, reg);
    }

    /// The payload arriving is in: the read's request completes, the peer's
    /// write is answered.
    pub(super) fn finish_landing<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if let Some(r) = self.reading.take() {
            self.tasks.complete(r.chunk);
        } else {
            self.target.finish_landing(reg);
        }
    }
}

//! The fabric as the shell of every link: bytes between links, pipes and
//! simulated memory, one randomly chosen action at a time.

use std::time::Duration;

use te_proto::link::{Event, Link, LinkState, PayloadDest};
use te_proto::{ErrorCode, Instant, Span};

use super::pipe::Pipe;
use super::{ConnFaults, ConnId, Fabric, Node, NodeId, Report, Sabotage, Violation};

/// One side of a connection: its link and what its shell holds.
pub(super) struct EndState {
    pub(super) node: usize,
    pub(super) link: Link,
    /// Frame bytes from the last transmit: `wbuf[wpos..wlen]` is not yet
    /// in the pipe.
    pub(super) wbuf: Box<[u8]>,
    pub(super) wpos: usize,
    pub(super) wlen: usize,
    /// Nothing touched the link since `timeout` was read and it was asked
    /// for a transmit: both answers still hold.
    pub(super) fresh: bool,
    pub(super) timeout: Option<Instant>,
    /// The payload after `wbuf`, and how much of it is in the pipe.
    pub(super) payload: Option<(Span, u64)>,
    /// The end is closed: it reads and writes nothing more.
    pub(super) gone: bool,
    /// A closed link flushes its last frames until then.
    pub(super) close_by: Option<Instant>,
    /// Notifications announced by the link and not yet taken.
    pub(super) notes_due: usize,
}

/// A connection: two ends and a pipe each way.
pub(super) struct Conn {
    pub(super) ends: [EndState; 2],
    /// `pipes[i]` carries bytes from end `i` to end `1 - i`.
    pub(super) pipes: [Pipe; 2],
    pub(super) faults: ConnFaults,
    /// [`Report::Gone`] was sent.
    pub(super) gone_reported: bool,
}

/// What one step may do, to end `.1` of connection `.0`.
#[derive(Clone, Copy)]
pub(super) enum Action {
    /// Put some of its frames and payload into its outgoing pipe.
    Write(usize, usize),
    /// Take some delivered bytes from its incoming pipe (or see its end).
    Read(usize, usize),
    /// Fire its link's timer, or drop it when its close grace ran out.
    Timer(usize, usize),
    /// Take a notification its link announced.
    TakeNote(usize, usize),
}

impl Fabric {
    /// Lists every action possible now into `self.actions`.
    pub(super) fn collect_actions(&mut self) {
        self.actions.clear();
        let now = self.now;
        for &c in &self.live {
            let conn = &mut self.conns[c];
            for i in 0..2 {
                let e = &mut conn.ends[i];
                if e.gone || self.nodes[e.node].is_frozen() {
                    continue;
                }
                if !e.fresh {
                    // Only calls on the link change what it would send and
                    // when it wants the time: ask again only after one.
                    if e.wpos == e.wlen && e.payload.is_none() {
                        e.wpos = 0;
                        e.wlen = 0;
                        if let Some(t) =
                            e.link
                                .poll_transmit(now, &mut e.wbuf, self.nodes[e.node].ep.registry())
                        {
                            e.wlen = t.len;
                            e.payload = t.payload.map(|s| (s, 0));
                        }
                    }
                    e.timeout = e.link.poll_timeout();
                    e.fresh = true;
                }
                let has_out = e.wpos < e.wlen || e.payload.is_some();
                if has_out && conn.pipes[i].room() > 0 {
                    self.actions.push(Action::Write(c, i));
                }
                let incoming = &conn.pipes[1 - i];
                if incoming.ready_len(now) > 0 || incoming.at_end() {
                    self.actions.push(Action::Read(c, i));
                }
                if e.timeout.is_some_and(|t| t <= now) || e.close_by.is_some_and(|t| t <= now) {
                    self.actions.push(Action::Timer(c, i));
                }
                if e.notes_due > 0 {
                    self.actions.push(Action::TakeNote(c, i));
                }
            }
        }
    }

    /// A random piece size: sometimes tiny, else up to `max_piece`.
    fn piece(&mut self) -> usize {
        if self.rng.chance(1, self.cfg.tiny_piece_one_in) {
            self.rng.range(1, 16) as usize
        } else {
            self.rng.range(1, self.cfg.max_piece as u64) as usize
        }
    }

    /// Moves a random piece of end `i`'s frames, then its payload (read
    /// from memory now), into its pipe with a random delivery delay.
    pub(super) fn write(&mut self, c: usize, i: usize, reports: &mut Vec<Report>) {
        let mut budget = self.piece().min(self.conns[c].pipes[i].room());
        let delay = self.rng.below(self.cfg.max_delay.as_nanos() as u64 + 1);
        let ready = self.now + Duration::from_nanos(delay);
        let conn = &mut self.conns[c];
        let e = &mut conn.ends[i];
        let mut out = Vec::with_capacity(budget);
        let frames = (e.wlen - e.wpos).min(budget);
        out.extend_from_slice(&e.wbuf[e.wpos..e.wpos + frames]);
        e.wpos += frames;
        budget -= frames;
        if e.wpos == e.wlen && budget > 0 {
            if let Some((span, sent)) = e.payload.as_mut() {
                let n = (span.len - *sent).min(budget as u64);
                let part = Span {
                    addr: span.addr + *sent,
                    len: n,
                    location: span.location,
                };
                let node = &self.nodes[e.node];
                match checked(node, part) {
                    Ok(()) => {
                        let bytes = node.arena.get(part).unwrap_or_default();
                        out.extend_from_slice(bytes);
                    }
                    Err(what) => {
                        self.violations.push(Violation {
                            at: self.now,
                            what: format!("node {} sends payload {what}", e.node),
                        });
                        out.resize(out.len() + n as usize, 0);
                    }
                }
                reports.push(Report::Access {
                    node: NodeId(e.node),
                    span: part,
                    landed: false,
                });
                *sent += n;
                if *sent == span.len {
                    e.payload = None;
                    e.link.payload_sent(self.nodes[e.node].ep.registry_mut());
                }
            }
        }
        conn.pipes[i].push(ready, out);
        if conn.pipes[i].queued() > conn.pipes[i].capacity() {
            let (q, cap) = (conn.pipes[i].queued(), conn.pipes[i].capacity());
            self.violation(format!("pipe holds {q} bytes, capacity {cap}"));
        }
    }

    /// Moves a random piece of delivered bytes to end `i`: into its link,
    /// or straight into memory where the link says.
    pub(super) fn read(&mut self, c: usize, i: usize, reports: &mut Vec<Report>) {
        let now = self.now;
        if self.conns[c].pipes[1 - i].at_end() {
            self.drop_end(c, i, false, reports);
            return;
        }
        let budget = self.piece();
        let conn = &mut self.conns[c];
        let e = &mut conn.ends[i];
        let node = &mut self.nodes[e.node];
        let pipe = &mut conn.pipes[1 - i];
        match e.link.poll_payload() {
            Some(PayloadDest::Memory(span)) => {
                let n = (span.len as usize).min(budget).min(pipe.ready_len(now));
                let part = Span {
                    len: n as u64,
                    ..span
                };
                pipe.peek(now, n, &mut self.scratch);
                if self.cfg.sabotage == Some(Sabotage::FlipPayloadBit) && !self.sabotaged {
                    self.sabotaged = true;
                    self.scratch[0] ^= 1;
                }
                match checked(node, part) {
                    Ok(()) => {
                        if let Some(dst) = node.arena.get_mut(part) {
                            dst.copy_from_slice(&self.scratch);
                        }
                    }
                    Err(what) => self.violations.push(Violation {
                        at: now,
                        what: format!("node {} lands payload {what}", e.node),
                    }),
                }
                reports.push(Report::Access {
                    node: NodeId(e.node),
                    span: part,
                    landed: true,
                });
                pipe.consume(n);
                e.link.payload_landed(now, n as u64, node.ep.registry_mut());
            }
            Some(PayloadDest::Discard(len)) => {
                let n = (len as usize).min(budget).min(pipe.ready_len(now));
                pipe.consume(n);
                e.link.payload_landed(now, n as u64, node.ep.registry_mut());
            }
            None => {
                pipe.peek(now, budget, &mut self.scratch);
                let used = e.link.handle_input(now, &self.scratch, node.ep.registry_mut());
                pipe.consume(used);
            }
        }
    }

    /// Drains the events of end `i` and closes the end once its link is
    /// closed and flushed (at once after a timeout: a silent peer reads
    /// nothing, as in te-runtime).
    pub(super) fn after_action(&mut self, c: usize, i: usize, reports: &mut Vec<Report>) {
        self.conns[c].ends[i].fresh = false;
        self.drain_events(c, i, reports);
        let now = self.now;
        let grace = self.cfg.close_grace;
        let e = &mut self.conns[c].ends[i];
        if e.gone || e.link.state() != LinkState::Closed {
            return;
        }
        let silent = e
            .link
            .close_reason()
            .is_some_and(|r| r.code() == ErrorCode::Timeout);
        let flushed = e.wpos == e.wlen && e.payload.is_none() && !e.link.wants_transmit();
        if silent || flushed {
            self.drop_end(c, i, false, reports);
        } else if e.close_by.is_none() {
            e.close_by = Some(now + grace);
        }
    }

    fn drain_events(&mut self, c: usize, i: usize, reports: &mut Vec<Report>) {
        let conn = &mut self.conns[c];
        let e = &mut conn.ends[i];
        let node = NodeId(e.node);
        while let Some(event) = e.link.poll_event() {
            match event {
                Event::Notification => {
                    // A shell that takes notifications late lets the
                    // link's inbox fill and its input stall behind it.
                    e.notes_due += 1;
                    if !e.gone && self.rng.chance(self.cfg.late_notes.0, self.cfg.late_notes.1) {
                        continue;
                    }
                    self.take_note(c, i, reports);
                    return self.drain_events(c, i, reports);
                }
                Event::SegmentInfo => {
                    if let Some(page) = e.link.take_segment_info() {
                        reports.push(Report::SegmentInfo {
                            conn: ConnId(c),
                            node,
                            page: Box::new(page),
                        });
                    }
                }
                event => reports.push(Report::Event {
                    conn: ConnId(c),
                    node,
                    event,
                }),
            }
        }
    }

    /// Takes one notification the link of end `i` announced and reports it.
    pub(super) fn take_note(&mut self, c: usize, i: usize, reports: &mut Vec<Report>) {
        let e = &mut self.conns[c].ends[i];
        if e.notes_due == 0 {
            return;
        }
        e.notes_due -= 1;
        let node = NodeId(e.node);
        let Some(note) = e.link.take_notification() else {
            return;
        };
        if self.cfg.sabotage == Some(Sabotage::DuplicateNotification) && !self.sabotaged {
            self.sabotaged = true;
            reports.push(Report::Notification {
                conn: ConnId(c),
                node,
                note: Box::new(note.clone()),
            });
        }
        reports.push(Report::Notification {
            conn: ConnId(c),
            node,
            note: Box::new(note),
        });
    }

    /// Closes end `i`: what it had not written is forgotten, its link sees
    /// the disconnect, and its peer sees the end of the stream after the
    /// bytes already in the pipe (or at once with `reset`).
    pub(super) fn drop_end(&mut self, c: usize, i: usize, reset: bool, reports: &mut Vec<Report>) {
        let conn = &mut self.conns[c];
        if conn.ends[i].gone {
            return;
        }
        let e = &mut conn.ends[i];
        let reg = self.nodes[e.node].ep.registry_mut();
        e.wpos = 0;
        e.wlen = 0;
        let forget = reset && self.cfg.sabotage == Some(Sabotage::ForgetDisconnect) && !self.sabotaged;
        if forget {
            // The deliberate bug: this link never learns its connection is gone.
            self.sabotaged = true;
            e.payload = None;
        } else {
            if e.payload.take().is_some() {
                e.link.payload_sent(reg);
            }
            e.link.handle_disconnect(reg);
        }
        e.gone = true;
        e.close_by = None;
        conn.pipes[i].eof = true;
        if reset {
            conn.pipes[i].clear();
        }
        conn.pipes[1 - i].clear();
        self.drain_events(c, i, reports);
        // A closing shell takes what already arrived.
        while self.conns[c].ends[i].notes_due > 0 {
            self.take_note(c, i, reports);
        }
    }

    /// Forgets connections whose both ends are closed.
    pub(super) fn reap(&mut self, reports: &mut Vec<Report>) {
        let conns = &mut self.conns;
        self.live.retain(|&c| {
            let conn = &mut conns[c];
            let gone = conn.ends.iter().all(|e| e.gone);
            if gone && !conn.gone_reported {
                conn.gone_reported = true;
                reports.push(Report::Gone { conn: ConnId(c) });
            }
            !gone
        });
    }
}

/// Checks that `span` lies in `node`'s arena and inside one region its
/// registry holds (draining regions included); the error says what is wrong.
fn checked(node: &Node, span: Span) -> Result<(), String> {
    if node.arena.get(span).is_none() {
        return Err(format!("outside its memory: {span:?}"));
    }
    let end = span.addr + span.len;
    let inside = node.ep.registry().regions().any(|r| {
        r.span.location == span.location && r.span.addr <= span.addr && end <= r.span.addr + r.span.len
    });
    if inside {
        Ok(())
    } else {
        Err(format!("outside registered memory: {span:?}"))
    }
}

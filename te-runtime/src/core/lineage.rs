//! The links of one peer, in the order the peer made them: a link that its
//! initiator gave up on may still deliver bytes, long after (they waited
//! in a frozen peer's kernel, a router, a long queue). docs/PROTOCOL.md
//! 11.3 gives the rule; this module applies it.
//!
//! Target side: every accepted connection gets a *ticket* when its
//! `Hello` is read, before the `HelloAck` goes out, so a link the peer
//! could send requests on (it had our `HelloAck`) has a lower ticket than
//! any link the peer opened after giving up on it. When the peer first
//! acts on a link (anything but `Ping`/`Pong`), its links from the same
//! name and address with lower tickets are closed and their unread bytes
//! dropped. The event loop is single-threaded, so no frame of an older
//! link is applied after the first frame of a newer one. A link whose
//! `Hello` itself came late gets a higher ticket, but it carries no
//! requests (its peer never had the `HelloAck`), so it never acts and
//! never closes the live one.
//!
//! Initiator side: the rule assumes one link per pair of engines and
//! direction, so a second segment that turns out to be an engine already
//! open (the same engine under another address) is refused, not left to
//! take turns with the first.

use super::*;

impl EngineCore {
    /// After a read of connection `c`: hands out its ticket once the peer's
    /// `Hello` is in, and fences the peer's older links once it acts.
    pub(super) fn order_links(&mut self, c: usize) {
        let Some(conn) = self.conns.get_mut(c).and_then(|c| c.as_mut()) else {
            return;
        };
        if conn.segment.is_some() || conn.fenced {
            return;
        }
        let Some(name) = conn.link.peer().map(|p| p.segment_name.clone()) else {
            return;
        };
        let ticket = *conn.ticket.get_or_insert_with(|| {
            self.tickets += 1;
            self.tickets
        });
        if conn.link.state() != LinkState::Established || !conn.link.peer_acted() {
            return;
        }
        conn.fenced = true;
        let addr = conn.peer_addr;
        let older: Vec<(usize, SocketAddr)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(k, o)| Some((k, o.as_ref()?)))
            .filter(|(k, o)| {
                *k != c
                    && o.segment.is_none()
                    && o.ticket.is_some_and(|t| t < ticket)
                    && o.peer_addr.ip() == addr.ip()
                    && o.link.peer().is_some_and(|p| p.segment_name == name)
            })
            .map(|(k, o)| (k, o.peer_addr))
            .collect();
        for (k, old) in older {
            info!(
                peer = %Escaped(&name),
                "link from {old} superseded by the newer link from {addr}: its unread bytes are dropped"
            );
            let why = status!(
                Disconnected,
                "link from {old} superseded by a newer link of the same peer from {addr}"
            );
            self.abandon_conn(k, why);
        }
    }

    /// Connection `c` to an opened segment is established: refuses it when
    /// the peer engine is already open as another segment.
    pub(super) fn check_one_link_per_peer(&mut self, c: usize) {
        let Some(conn) = self.conns.get(c).and_then(|c| c.as_ref()) else {
            return;
        };
        let (Some(s), Some(peer)) = (conn.segment, conn.link.peer()) else {
            return;
        };
        let twin = self.segments.iter().enumerate().find(|(t, seg)| {
            *t != s
                && seg
                    .conn
                    .and_then(|k| self.conns.get(k)?.as_ref())
                    .filter(|o| o.link.state() == LinkState::Established)
                    .and_then(|o| o.link.peer())
                    .is_some_and(|p| p.segment_name == peer.segment_name)
        });
        let Some((_, twin)) = twin else { return };
        let why = status!(
            Invalid,
            "{} is engine {}, already open as {}: use that segment",
            self.segments[s].name,
            Escaped(&peer.segment_name),
            twin.name
        );
        warn!("{}", why.message());
        self.fail_conn(c, why);
    }

    /// Closes connection `c` at once, dropping what it has not read and
    /// resetting the connection (no queued byte of ours is sent later).
    pub(super) fn abandon_conn(&mut self, c: usize, why: Status) {
        if let Some(conn) = self.conns.get(c).and_then(|c| c.as_ref()) {
            conn.reset_on_close();
        }
        self.fail_conn(c, why);
    }
}

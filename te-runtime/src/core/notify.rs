//! Notifications: sending, receiving.

use super::*;

/// A notification received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The sending peer's segment name.
    pub from: String,
    /// The notification's name.
    pub name: String,
    /// Its message.
    pub msg: Vec<u8>,
}

impl EngineCore {
    /// Sends a notification to an opened segment.
    pub fn send_notification(&mut self, id: SegmentId, name: &str, msg: &[u8]) -> Result<()> {
        self.check_running()?;
        check_note(name, msg)?;
        let i = id.0 as usize;
        self.segment(id)?;
        self.ensure_connection(i)?;
        self.ep.reserve_note(id)?;
        let seg = &mut self.segments[i];
        seg.notes.push_back((name.to_string(), msg.to_vec()));
        if let Some(c) = seg.conn {
            self.service(c);
        }
        Ok(())
    }

    /// Takes the notifications received so far, oldest first.
    pub fn take_notifications(&mut self) -> Vec<Notification> {
        let out: Vec<_> = self.inbox.drain(..).collect();
        if out.is_empty() {
            // Nothing taken, no room made: a waiter polling for
            // notifications costs no system call.
            return out;
        }
        // Connections that stalled on a full inbox can go on.
        for c in 0..self.conns.len() {
            if self.conns[c].is_some() {
                self.pull_notifications(c);
                self.service(c);
            }
        }
        out
    }
}

/// Checks a notification against the wire's limits before it is queued.
pub(super) fn check_note(name: &str, msg: &[u8]) -> Result<()> {
    te_proto::link::Notification::new(name, msg).map(|_| ())
}

//! The frames a link owes its peer, one flag or slot each, in the order
//! [`next_frame`](super::state::State::next_frame) sends them.

use crate::error::Status;
use crate::location::Location;

/// The control frames due for the peer (queues of frames, such as
/// notifications and answers, live with the half that owns them).
#[derive(Debug, Default)]
pub(super) struct Due {
    /// `Error(0)` telling the peer why the link closed; sent even after the
    /// close, before anything else.
    pub link_error: Option<Status>,
    /// `Goodbye`, after a local close.
    pub goodbye: bool,
    /// This side's `Hello` (connector) or `HelloAck` (acceptor).
    pub hello: bool,
    /// The connector's `Auth` proof.
    pub auth: Option<[u8; 32]>,
    /// `Pong` echoing this token.
    pub pong: Option<u64>,
    /// A `Ping` (its token is chosen when it is sent).
    pub ping: bool,
    /// A keepalive `Pong` (token 0) while the peer's payload arrives.
    pub keepalive: bool,
    /// An `InfoReq` `(req_id, after)`, sent once the window has room.
    pub info: Option<(u64, Option<(Location, u64)>)>,
}

impl Due {
    /// Forgets every frame due for an open link, keeping the closing ones
    /// (`Error(0)` and `Goodbye`).
    pub fn clear_open(&mut self) {
        let Due {
            link_error: _,
            goodbye: _,
            hello,
            auth,
            pong,
            ping,
            keepalive,
            info,
        } = self;
        *hello = false;
        *auth = None;
        *pong = None;
        *ping = false;
        *keepalive = false;
        *info = None;
    }
}

//! How a fabric draws its randomness, and the deliberate bugs it can play.

use std::time::Duration;

/// A deliberate bug, to prove that a checker notices one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Flip one bit of the first payload byte landed in memory.
    FlipPayloadBit,
    /// Deliver the first notification twice.
    DuplicateNotification,
    /// At the first reset, do not tell one of the two links.
    ForgetDisconnect,
}

/// How the fabric draws delays and sizes.
#[derive(Clone, Debug)]
pub struct FabricConfig {
    /// Largest delivery delay of one write.
    pub max_delay: Duration,
    /// Pipe capacities are drawn from this range (bytes, inclusive).
    pub pipe_capacity: (usize, usize),
    /// Largest piece moved by one read or write.
    pub max_piece: usize,
    /// One piece in this many is tiny (1 to 16 bytes).
    pub tiny_piece_one_in: u64,
    /// How long a closed link may flush its last frames.
    pub close_grace: Duration,
    /// Of every `.1` notifications, `.0` are taken from the link later, by
    /// an action of their own, instead of as soon as they are announced.
    pub late_notes: (u64, u64),
    /// A deliberate bug, for testing checkers; `None` in real runs.
    pub sabotage: Option<Sabotage>,
}

impl Default for FabricConfig {
    fn default() -> FabricConfig {
        FabricConfig {
            max_delay: Duration::from_millis(2),
            pipe_capacity: (512, 64 << 10),
            max_piece: 16 << 10,
            tiny_piece_one_in: 6,
            close_grace: Duration::from_millis(200),
            late_notes: (1, 2),
            sabotage: None,
        }
    }
}

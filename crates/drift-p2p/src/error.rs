//! The transport's errors: [`ConnectError`] for dialing, [`StreamError`] for everything on a connection.

/// Why a stream operation (or [`crate::Connection::request`]) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Nothing arrived (or no credit or stream slot became free) within the deadline.
    #[error("timed out waiting for the peer")]
    Timeout,
    /// The connection is gone; the string says why.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The peer (or this side) aborted the stream.
    #[error("stream reset: {0}")]
    Reset(String),
    /// The message encodes to more than [`crate::MAX_MESSAGE_LEN`] bytes; split it.
    #[error(
        "message too large: {len} bytes encoded, the limit is {} (split the payload)",
        crate::MAX_MESSAGE_LEN
    )]
    TooLarge {
        /// The encoded length.
        len: usize,
    },
    /// A message could not be encoded, or the peer sent bytes that are not a valid message.
    #[error("bad message: {0}")]
    Decode(String),
    /// No stream slot became free within the deadline (too many open streams), or
    /// stream ids on this connection are exhausted.
    #[error("too many open streams on this connection")]
    Limit,
}

/// Why [`crate::Endpoint::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect or I/O during the handshake failed.
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
    /// Connect, handshake and hello did not finish within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The Noise handshake or the hello failed; the message says why.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    Version {
        /// [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// The version the peer announced.
        theirs: u32,
    },
    /// The peer closed the connection and said (or implied) why.
    #[error("rejected by the peer: {0}")]
    Rejected(String),
    /// This endpoint already has `max_connections` connections.
    #[error("connection limit reached")]
    Limit,
    /// This endpoint was shut down; it makes no more connections.
    #[error("this endpoint is shut down")]
    ShutDown,
}

impl ConnectError {
    /// True if the peer refused or dropped the connection the way a node
    /// busy with handshakes also does (its handshake table full, it evicts
    /// the oldest): a retry a moment later may succeed. A wrong secret looks
    /// the same from this side, and fails again.
    pub fn may_be_load(&self) -> bool {
        match self {
            ConnectError::Rejected(_) => true,
            ConnectError::Handshake(m) => m == crate::noise::WRONG_SECRET,
            ConnectError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

//! [`Config`]: identity, secret and the limits and timeouts of an [`crate::Endpoint`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use drift_crypto::{ClusterSecret, KeyPurpose};

use crate::key::{NodeKey, Role};
use crate::proto::MAX_FRAME_LEN;

/// The smallest per-stream window a peer may announce; anything smaller could not
/// carry one maximal message plus the credit hysteresis.
pub(crate) const MIN_STREAM_WINDOW: u32 = 4 * MAX_FRAME_LEN as u32;

/// Everything an endpoint needs; [`Config::new`] fills in the defaults.
#[derive(Clone)]
pub struct Config {
    /// The Noise pre-shared key, derived from the cluster secret.
    pub psk: [u8; 32],
    /// This endpoint's static key; its [`crate::PeerId`] is derived from it.
    pub key: NodeKey,
    /// Announced to peers in the hello.
    pub role: Role,
    /// The listen address announced in the hello (a node's public address).
    pub advertise: Option<SocketAddr>,
    /// Bound on TCP connect + Noise handshake + hello. Default 5 s.
    pub handshake_timeout: Duration,
    /// Per-`recv` deadline of streams, per-`send` deadline for credit, and the
    /// whole deadline of [`crate::Connection::request`]. Default 10 s.
    pub request_timeout: Duration,
    /// How often to ping an otherwise quiet peer. Default 1 s.
    pub heartbeat_interval: Duration,
    /// A connection with no frame received for this long is closed. Default 5 s.
    pub idle_timeout: Duration,
    /// Authenticated connections (inbound and outbound) at once. Default 256.
    pub max_connections: usize,
    /// Inbound connections still in the handshake at once. Default 64. They
    /// have their own pool, so connections that never prove the secret never
    /// crowd out authenticated ones. A full pool evicts the oldest handshake
    /// of the address holding the most places instead of refusing a newcomer.
    pub max_pending_handshakes: usize,
    /// Streams per connection and direction. Default 256.
    pub max_streams: usize,
    /// Bytes a peer may send on one stream before the application reads them.
    /// Default 1 MiB; raised to at least 256 KiB.
    pub stream_window: u32,
}

impl Config {
    /// A configuration with the PSK derived from `secret` and default limits.
    pub fn new(secret: &ClusterSecret, key: NodeKey, role: Role) -> Config {
        Config {
            psk: secret.derive(KeyPurpose::TransportPsk),
            key,
            role,
            advertise: None,
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_pending_handshakes: 64,
            max_streams: 256,
            stream_window: 1 << 20,
        }
    }

    pub(crate) fn effective_window(&self) -> u32 {
        self.stream_window.clamp(MIN_STREAM_WINDOW, u32::MAX / 4)
    }

    pub(crate) fn effective_max_streams(&self) -> u32 {
        self.max_streams.clamp(1, 1 << 20) as u32
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("psk", &"<redacted>")
            .field("key", &self.key)
            .field("role", &self.role)
            .field("advertise", &self.advertise)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .field("max_streams", &self.max_streams)
            .field("stream_window", &self.stream_window)
            .finish()
    }
}

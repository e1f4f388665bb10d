//! drift's transport: authenticated, framed, multiplexed streams of typed messages over TCP.
//!
//! # Overview
//! - [`Endpoint`]: listens ([`Endpoint::bind`]) and/or dials ([`Endpoint::connect`]);
//!   reports [`Event`]s (connected, disconnected, incoming stream) through [`Events`].
//! - [`Connection`]: one authenticated peer (Noise `XXpsk3` with the cluster
//!   secret's PSK; the [`PeerId`] is derived from the peer's proven static key).
//!   [`Connection::request`] is one request/response exchange; [`Connection::open`]
//!   starts a [`Stream`] for anything longer.
//! - [`Stream`]: an ordered, flow-controlled, bidirectional stream of messages `M`,
//!   the application's own `serde` type, at most [`MAX_MESSAGE_LEN`] bytes encoded.
//! - [`Config`], [`NodeKey`], [`Role`]; errors [`ConnectError`] and [`StreamError`].
//! - [`proto`]: the wire format ([`PROTOCOL_VERSION`], [`MAX_FRAME_LEN`]).
//!
//! Every wait has a deadline (`handshake_timeout`, `request_timeout`,
//! `idle_timeout`), peer input never panics, and memory per connection is bounded
//! by the frame limit, the per-stream window and the stream limit.
//!
//! # Example
//! ```
//! use drift_p2p::{Config, Endpoint, Event, NodeKey, Role};
//! use drift_crypto::ClusterSecret;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = ClusterSecret::generate()?;
//! let any_port = "127.0.0.1:0".parse()?;
//! let (server, mut events) =
//!     Endpoint::<String>::bind(any_port, Config::new(&secret, NodeKey::generate(), Role::Node)).await?;
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         if let Event::Stream { mut stream, .. } = event {
//!             tokio::spawn(async move {
//!                 if let Ok(Some(name)) = stream.recv().await {
//!                     let _ = stream.send(&format!("hello, {name}")).await;
//!                     let _ = stream.finish().await;
//!                 }
//!             });
//!         }
//!     }
//! });
//!
//! let (client, _client_events) =
//!     Endpoint::<String>::client(Config::new(&secret, NodeKey::generate(), Role::Client));
//! let conn = client.connect(server.local_addr().expect("bound")).await?;
//! assert_eq!(conn.peer_id(), server.peer_id());
//! assert_eq!(conn.request("drift".to_string()).await?, "hello, drift");
//!
//! client.shutdown().await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod admission;
mod config;
mod conn;
mod endpoint;
mod error;
mod frame;
mod key;
mod noise;
pub mod payload;
pub mod proto;
mod stream;
#[doc(hidden)]
pub mod testing;

pub use config::Config;
pub use endpoint::{Endpoint, Event, Events};
pub use error::{ConnectError, StreamError};
#[doc(hidden)]
pub use frame::decode_frames;
pub use key::{NodeKey, PeerId, PeerIdParseError, Role};
pub use proto::{MAX_FRAME_LEN, MAX_MESSAGE_LEN, PROTOCOL_VERSION};
pub use stream::{Connection, Stream};

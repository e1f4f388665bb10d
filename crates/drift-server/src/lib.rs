//! The drift node: a replicated, encrypted, content-addressed file store.
//!
//! # Overview
//! - [`Node`]: start one with [`Node::start`] and a [`NodeConfig`]; then
//!   [`Node::store`], [`Node::get`] (a verified [`FileReader`]), [`Node::delete`],
//!   [`Node::list`], [`Node::status`] and [`Node::shutdown`].
//! - Files are cut into chunks, sealed by drift-crypto, and placed on R nodes by
//!   rendezvous hashing; a store returns once a majority of each chunk's replicas
//!   fsynced it. The name index replicates to every node and converges by
//!   last-writer-wins versions from a hybrid logical clock; deletes are tombstones.
//! - Membership, anti-entropy, repair, garbage collection and scrub run in the
//!   background; see the `members`, `sync` and `maintenance` modules.
//! - [`client::Client`]: what the `drift` CLI uses to talk to a node.
//! - [`proto`]: the node protocol on top of drift-p2p.
//!
//! # Example
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use drift_crypto::ClusterSecret;
//! use drift_server::{Node, NodeConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let secret = ClusterSecret::generate()?;
//! let node = Node::start(NodeConfig::new("127.0.0.1:0".parse()?, dir.path(), secret)).await?;
//!
//! node.store("hello.txt", &b"hello, drift"[..]).await?;
//! let bytes = node.get("hello.txt").await?.read_to_end().await?;
//! assert_eq!(bytes, b"hello, drift");
//!
//! node.delete("hello.txt").await?;
//! assert!(node.get("hello.txt").await.is_err());
//! node.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod batch;
mod chunks;
pub mod client;
mod clock;
mod config;
mod error;
mod files;
mod maintenance;
mod manifest;
mod members;
mod node;
pub mod placement;
pub mod proto;
mod serve;
mod status;
mod sync;

pub use config::NodeConfig;
pub use error::{DeleteError, GetError, MAX_NAME_LEN, StartError, StoreError, check_name};
pub use files::FileReader;
pub use node::Node;
pub use status::{FileInfo, NodeStatus, PeerState, PeerStatus, TransferUse, Unreached};

/// Re-exported so users need not depend on drift-p2p for node ids.
pub use drift_p2p::PeerId;
/// Re-exported so users need not depend on drift-store for versions.
pub use drift_store::Version;

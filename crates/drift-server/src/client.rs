//! A client of one node: what the `drift` CLI uses for put, get, rm, ls and status.
//!
//! The client holds the cluster secret and connects in the transport's client
//! role: it can ask a node to store and read files but is never a storage peer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use drift_crypto::ClusterSecret;
use drift_p2p::{Config, ConnectError, Connection, Endpoint, NodeKey, Role, StreamError};
use drift_store::Version;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::proto::{FailKind, Msg, PIECE_LEN};
use crate::status::{FileInfo, NodeStatus};

/// How much an upload asks its reader for at once.
const READ_AHEAD: usize = 1 << 20;

/// Handshakes a client tries when the node drops them as a busy node does.
const CONNECT_TRIES: u32 = 5;

/// Why a client operation failed. Each message is one line for a person.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached or refused the handshake.
    #[error("cannot reach node {addr}: {source}")]
    Connect {
        /// The node's address.
        addr: SocketAddr,
        /// Why.
        source: ConnectError,
    },
    /// No such file.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The node answered with an error.
    #[error("{message}")]
    Failed {
        /// What kind.
        kind: FailKind,
        /// The node's message.
        message: String,
    },
    /// The connection failed mid-operation.
    #[error("connection to the node failed: {0}")]
    Transport(#[from] StreamError),
    /// Reading the local input failed.
    #[error("cannot read the input: {0}")]
    Read(std::io::Error),
    /// Writing the local output failed.
    #[error("cannot write the output: {0}")]
    Write(std::io::Error),
    /// The node broke the protocol.
    #[error("the node sent an unexpected answer: {0}")]
    Protocol(String),
}

/// Refuses a name the node would refuse, before sending it: a name far over
/// the limit would otherwise fail as a message too large for the transport.
fn valid(name: &str) -> Result<(), ClientError> {
    crate::error::check_name(name).map_err(|why| ClientError::Failed {
        kind: FailKind::BadRequest,
        message: crate::StoreError::InvalidName(why).to_string(),
    })
}

/// A connection to one node.
pub struct Client {
    endpoint: Endpoint<Msg>,
    conn: Connection<Msg>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.conn.peer_id())
            .field("addr", &self.conn.remote_addr())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the node at `addr` with the cluster secret, giving up after `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        secret: &ClusterSecret,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut config = Config::new(secret, NodeKey::generate(), Role::Client);
        config.handshake_timeout = timeout;
        config.request_timeout = timeout.max(Duration::from_secs(10));
        let (endpoint, _events) = Endpoint::<Msg>::client(config);
        // A node flooded with handshakes drops the oldest ones; those try
        // again a moment later, a few times, within the timeout.
        let give_up = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        let mut tries = 1;
        let conn = loop {
            match endpoint.connect(addr).await {
                Ok(conn) => break conn,
                Err(source)
                    if source.may_be_load()
                        && tries < CONNECT_TRIES
                        && tokio::time::Instant::now() + pause < give_up =>
                {
                    tokio::time::sleep(pause).await; // a backoff, not a wait for state
                    pause *= 2;
                    tries += 1;
                }
                Err(source) => return Err(ClientError::Connect { addr, source }),
            }
        };
        Ok(Client { endpoint, conn })
    }

    /// Stores `reader`'s bytes as `name`; returns the new version and size.
    /// `progress` is called with the bytes sent so far.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        name: &str,
        reader: R,
        progress: impl FnMut(u64),
    ) -> Result<(Version, u64), ClientError> {
        // Read a whole READ_AHEAD at a time: a tokio file reads on the
        // blocking pool, and 60 KiB reads spent ~40 % of a put's client CPU
        // on thread hand-offs.
        let blocks = ReaderStream::with_capacity(reader, READ_AHEAD);
        self.put_blocks(name, blocks, progress).await
    }

    /// [`Client::put`] for a source that already holds its bytes in blocks
    /// (the CLI's direct file reads): each piece sent is a slice of a block,
    /// not a copy. Blocks may have any length; a read error ends the put
    /// with [`ClientError::Read`].
    pub async fn put_blocks<S>(
        &self,
        name: &str,
        mut blocks: S,
        mut progress: impl FnMut(u64),
    ) -> Result<(Version, u64), ClientError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        valid(name)?;
        let mut s = self.conn.open().await?;
        s.send(&Msg::Put {
            name: name.to_string(),
        })
        .await?;
        let mut sent = 0u64;
        let send_result: Result<(), ClientError> = async {
            // Bytes short of a piece wait here for the next block, so short
            // reads (a pipe's) still go out in whole pieces.
            let mut carry = BytesMut::new();
            while let Some(block) = next_block(&mut blocks, &mut s, name).await? {
                let mut block = block.map_err(ClientError::Read)?;
                if !carry.is_empty() {
                    let take = (PIECE_LEN - carry.len()).min(block.len());
                    carry.extend_from_slice(&block.split_to(take));
                    if carry.len() < PIECE_LEN {
                        continue;
                    }
                    let piece = carry.split().freeze();
                    sent += piece.len() as u64;
                    s.send(&Msg::Data(piece)).await?;
                    progress(sent);
                }
                while block.len() >= PIECE_LEN {
                    let piece = block.split_to(PIECE_LEN);
                    sent += piece.len() as u64;
                    s.send(&Msg::Data(piece)).await?;
                    progress(sent);
                }
                carry.extend_from_slice(&block);
            }
            if !carry.is_empty() {
                sent += carry.len() as u64;
                s.send(&Msg::Data(carry.freeze())).await?;
                progress(sent);
            }
            s.finish().await?;
            Ok(())
        }
        .await;
        if let Err(e) = send_result {
            // The node may have refused early; its reason beats ours.
            if !matches!(e, ClientError::Read(_))
                && let Ok(Some(answer)) = s.recv().await
            {
                return Err(into_error(answer, name));
            }
            return Err(e);
        }
        match s.recv().await? {
            Some(Msg::Stored { version, size }) => Ok((version, size)),
            Some(other) => Err(into_error(other, name)),
            None => Err(ClientError::Protocol("no answer to a put".into())),
        }
    }

    /// Reads `name` into `writer`; returns the file's size. Every byte written
    /// has been verified by the node; on error, what was written is incomplete
    /// and the caller must discard it.
    pub async fn get<W: AsyncWrite + Unpin>(
        &self,
        name: &str,
        mut writer: W,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, ClientError> {
        valid(name)?;
        let mut s = self.conn.open().await?;
        s.send(&Msg::Get {
            name: name.to_string(),
        })
        .await?;
        s.finish().await?;
        let size = match s.recv().await? {
            Some(Msg::FileFollows { size }) => size,
            Some(other) => return Err(into_error(other, name)),
            None => return Err(ClientError::Protocol("no answer to a get".into())),
        };
        let mut got = 0u64;
        while let Some(msg) = s.recv().await? {
            match msg {
                Msg::Data(bytes) => {
                    got += bytes.len() as u64;
                    if got > size {
                        return Err(ClientError::Protocol(
                            "more bytes than the file's size".into(),
                        ));
                    }
                    writer.write_all(&bytes).await.map_err(ClientError::Write)?;
                    progress(got, size);
                }
                other => return Err(into_error(other, name)),
            }
        }
        if got != size {
            return Err(ClientError::Protocol(format!(
                "file ended after {got} of {size} bytes"
            )));
        }
        writer.flush().await.map_err(ClientError::Write)?;
        Ok(size)
    }

    /// Deletes `name`.
    pub async fn delete(&self, name: &str) -> Result<(), ClientError> {
        valid(name)?;
        match self
            .conn
            .request(Msg::Delete {
                name: name.to_string(),
            })
            .await?
        {
            Msg::Done => Ok(()),
            other => Err(into_error(other, name)),
        }
    }

    /// Every live file, sorted by name.
    pub async fn list(&self) -> Result<Vec<FileInfo>, ClientError> {
        let mut s = self.conn.open().await?;
        s.send(&Msg::List).await?;
        s.finish().await?;
        let mut files = Vec::new();
        while let Some(msg) = s.recv().await? {
            match msg {
                Msg::Listing { files: batch } => files.extend(batch),
                other => return Err(into_error(other, "")),
            }
        }
        Ok(files)
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        match self.conn.request(Msg::Status).await? {
            Msg::StatusReport { status } => Ok(status),
            other => Err(into_error(other, "")),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.endpoint.shutdown().await;
    }
}

fn into_error(msg: Msg, name: &str) -> ClientError {
    match msg {
        Msg::NotFound => ClientError::NotFound(name.to_string()),
        Msg::Failed { kind, message } => ClientError::Failed { kind, message },
        other => ClientError::Protocol(format!("{other:?}").chars().take(80).collect()),
    }
}

/// The upload's next block; while the reader has none, listens to the node,
/// which may give up on a stalled upload (or refuse it) before the reader
/// produces more: its answer ends the put instead of a wait without end.
async fn next_block<S>(
    blocks: &mut S,
    s: &mut drift_p2p::Stream<Msg>,
    name: &str,
) -> Result<Option<std::io::Result<Bytes>>, ClientError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    loop {
        tokio::select! {
            biased;
            block = blocks.next() => return Ok(block),
            answer = s.recv() => match answer {
                // Nothing from the node in a request timeout: still waiting on the reader.
                Err(StreamError::Timeout) => continue,
                Ok(Some(answer)) => return Err(into_error(answer, name)),
                Ok(None) => {
                    return Err(ClientError::Protocol(
                        "the node ended the upload before it was complete".into(),
                    ));
                }
                Err(e) => return Err(e.into()),
            },
        }
    }
}

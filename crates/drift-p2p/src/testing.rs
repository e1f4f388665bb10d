//! A raw protocol peer for tests: does the real handshake, then sends and
//! receives arbitrary envelopes (spoofed hellos, silence, protocol violations).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::noise::{Session, handshake, our_hello};
use crate::proto::{Envelope, Hello};

/// One side of a connection, driven by hand.
pub struct RawPeer {
    session: Session,
}

fn to_io(e: crate::noise::HandshakeError) -> io::Error {
    io::Error::other(format!("{e:?}"))
}

impl RawPeer {
    /// Dials `addr` and runs the Noise handshake as the initiator (no hello).
    pub async fn connect(addr: SocketAddr, config: &Config) -> io::Result<RawPeer> {
        let tcp = TcpStream::connect(addr).await?;
        Ok(RawPeer {
            session: handshake(tcp, config, true).await.map_err(to_io)?,
        })
    }

    /// Accepts one connection and runs the handshake as the responder (no hello).
    pub async fn accept(listener: &TcpListener, config: &Config) -> io::Result<RawPeer> {
        let (tcp, _) = listener.accept().await?;
        Ok(RawPeer {
            session: handshake(tcp, config, false).await.map_err(to_io)?,
        })
    }

    /// The hello a well-behaved endpoint with `config` would send.
    pub fn hello(config: &Config) -> Hello {
        our_hello(config)
    }

    /// Seals and sends one envelope.
    pub async fn send(&mut self, env: &Envelope) -> io::Result<()> {
        self.session.send(env).await
    }

    /// Writes raw bytes to the socket (not sealed, not framed).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.session.writer.write_all(bytes).await
    }

    /// Receives one envelope; `Ok(None)` when the peer closed the connection.
    pub async fn recv(&mut self) -> io::Result<Option<Envelope>> {
        self.session.recv().await
    }
}

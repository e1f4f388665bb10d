//! The Noise `XXpsk3` handshake and the hello exchange that follows it.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use snow::Builder;
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::config::{Config, MIN_STREAM_WINDOW};
use crate::error::ConnectError;
use crate::frame::{BatchBuf, FrameReader, Opener, Sealer, put_frame};
use crate::key::PeerId;
use crate::proto::{
    Body, Envelope, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION, decode_envelope, encode_envelope,
};

const NOISE_PARAMS: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";
pub(crate) const WRONG_SECRET: &str = "the peer dropped the connection after our proof of the cluster secret: the cluster secret is probably wrong (or the node was too busy with other connections)";

/// An authenticated, encrypted connection before its tasks start: used for the
/// hello exchange and by the raw test peer.
pub(crate) struct Session {
    pub(crate) reader: FrameReader<OwnedReadHalf>,
    pub(crate) writer: OwnedWriteHalf,
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
    pub(crate) remote_id: PeerId,
    pub(crate) remote_addr: SocketAddr,
}

/// A handshake step that failed, and whether it is the peer's fault or ours.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Io(io::Error),
    /// Closed before our proof of the secret (limit, not a drift peer).
    ClosedEarly,
    Handshake(String),
}

impl From<HandshakeError> for ConnectError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Io(e) => ConnectError::Io(e),
            HandshakeError::ClosedEarly => ConnectError::Rejected(
                "the peer closed the connection before the handshake (it may be at its connection limit)".into(),
            ),
            HandshakeError::Handshake(m) => ConnectError::Handshake(m),
        }
    }
}

async fn read_frame(
    reader: &mut FrameReader<OwnedReadHalf>,
) -> Result<Option<BytesMut>, io::Error> {
    reader.next().await
}

async fn write_frame(writer: &mut OwnedWriteHalf, body: &[u8]) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(body.len() + 4);
    put_frame(&mut out, body);
    writer.write_all(&out).await
}

/// Runs the handshake on `tcp`; `initiator` is the dialing side.
pub(crate) async fn handshake(
    tcp: TcpStream,
    config: &Config,
    initiator: bool,
) -> Result<Session, HandshakeError> {
    tcp.set_nodelay(true).map_err(HandshakeError::Io)?;
    let remote_addr = tcp.peer_addr().map_err(HandshakeError::Io)?;
    let (rd, mut writer) = tcp.into_split();
    let mut reader = FrameReader::new(rd);
    let hs_err = |e: snow::Error| HandshakeError::Handshake(format!("noise: {e}"));
    let params = NOISE_PARAMS.parse().map_err(hs_err)?;
    // Explicitly prefer ring (hardware AES-GCM and SHA-256); x25519 comes from
    // snow's default resolver because ring's resolver has no Dh.
    let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    let b = Builder::with_resolver(params, Box::new(resolver))
        .local_private_key(config.key.private_ref())
        .and_then(|b| b.psk(3, &config.psk))
        .map_err(hs_err)?;
    let mut hs = if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .map_err(hs_err)?;
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    if initiator {
        let n = hs.write_message(&[], &mut buf).map_err(hs_err)?;
        write_frame(&mut writer, &buf[..n])
            .await
            .map_err(HandshakeError::Io)?;
        let msg2 = match read_frame(&mut reader).await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(HandshakeError::ClosedEarly),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(HandshakeError::ClosedEarly);
            }
            Err(e) => {
                return Err(HandshakeError::Handshake(format!(
                    "bad handshake frame: {e}"
                )));
            }
        };
        hs.read_message(&msg2, &mut buf).map_err(|e| {
            HandshakeError::Handshake(format!("invalid noise message from the peer: {e}"))
        })?;
        let n = hs.write_message(&[], &mut buf).map_err(hs_err)?;
        write_frame(&mut writer, &buf[..n])
            .await
            .map_err(HandshakeError::Io)?;
    } else {
        for step in 0..2 {
            let msg = match read_frame(&mut reader).await {
                Ok(Some(f)) => f,
                Ok(None) => {
                    return Err(HandshakeError::Handshake(
                        "the peer closed the connection during the handshake".into(),
                    ));
                }
                Err(e) => {
                    return Err(HandshakeError::Handshake(format!(
                        "bad handshake frame: {e}"
                    )));
                }
            };
            hs.read_message(&msg, &mut buf).map_err(|e| {
                if step == 1 {
                    HandshakeError::Handshake(format!(
                        "cannot authenticate the peer ({e}): its cluster secret is probably wrong"
                    ))
                } else {
                    HandshakeError::Handshake(format!("invalid noise message from the peer: {e}"))
                }
            })?;
            if step == 0 {
                let n = hs.write_message(&[], &mut buf).map_err(hs_err)?;
                write_frame(&mut writer, &buf[..n])
                    .await
                    .map_err(HandshakeError::Io)?;
            }
        }
    }
    let remote_id = hs
        .get_remote_static()
        .map(PeerId::from_public_key)
        .ok_or_else(|| HandshakeError::Handshake("the peer sent no static key".into()))?;
    if !hs.is_handshake_finished() {
        return Err(HandshakeError::Handshake(
            "the noise handshake did not finish".into(),
        ));
    }
    // The transport ciphers run outside snow (see `frame`), in place in the
    // frame buffers; Noise's split gives the initiator's sending key first.
    let (mut i_to_r, mut r_to_i) = hs.dangerously_get_raw_split();
    let (send_key, recv_key) = if initiator {
        (&i_to_r, &r_to_i)
    } else {
        (&r_to_i, &i_to_r)
    };
    let (sealer, opener) = (Sealer::new(send_key), Opener::new(recv_key));
    i_to_r.fill(0);
    r_to_i.fill(0);
    Ok(Session {
        reader,
        writer,
        sealer,
        opener,
        remote_id,
        remote_addr,
    })
}

impl Session {
    /// Sends one envelope right away.
    pub(crate) async fn send(&mut self, env: &Envelope) -> io::Result<()> {
        let plain = encode_envelope(env);
        let mut out = BatchBuf::new(plain.len() + 64);
        self.sealer
            .seal_into(&plain, &mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.writer.write_all(out.bytes()).await
    }

    /// The next envelope; `Ok(None)` at end of stream.
    pub(crate) async fn recv(&mut self) -> io::Result<Option<Envelope>> {
        let Some(opened) = self.reader.next_open(&mut self.opener).await? else {
            return Ok(None);
        };
        let plain = opened.map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot decrypt frame: {e}"),
            )
        })?;
        decode_envelope(plain)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Sends our hello, reads and checks theirs. On a mismatch it tells the
    /// peer why (a `Close`) before returning the error.
    pub(crate) async fn exchange_hello(
        &mut self,
        config: &Config,
        initiator: bool,
    ) -> Result<Hello, ConnectError> {
        self.send(&Envelope {
            stream: 0,
            body: Body::Hello(our_hello(config)),
        })
        .await?;
        let env = match self.recv().await {
            Ok(Some(env)) => env,
            Ok(None) if initiator => return Err(ConnectError::Handshake(WRONG_SECRET.into())),
            Err(e) if initiator && e.kind() != io::ErrorKind::InvalidData => {
                return Err(ConnectError::Handshake(WRONG_SECRET.into()));
            }
            Ok(None) => {
                return Err(ConnectError::Handshake(
                    "the peer closed the connection before its hello".into(),
                ));
            }
            Err(e) => return Err(ConnectError::Handshake(format!("bad hello: {e}"))),
        };
        let hello = match env.body {
            Body::Hello(h) => h,
            Body::Close(reason) => return Err(ConnectError::Rejected(reason)),
            other => {
                return Err(self
                    .refuse(format!("expected a hello, got {}", body_name(&other)))
                    .await);
            }
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            let err = ConnectError::Version {
                ours: PROTOCOL_VERSION,
                theirs: hello.protocol_version,
            };
            let _ = self.send(&close(&err.to_string())).await;
            return Err(err);
        }
        if hello.peer_id != self.remote_id {
            return Err(self
                .refuse(format!(
                    "hello claims peer id {} but the noise key proves {}",
                    hello.peer_id.short(),
                    self.remote_id.short()
                ))
                .await);
        }
        if hello.stream_window < MIN_STREAM_WINDOW || hello.max_streams == 0 {
            return Err(self
                .refuse("hello announces unusable stream limits".into())
                .await);
        }
        Ok(hello)
    }

    /// Tells an authenticated peer why it is turned away, instead of a hello.
    pub(crate) async fn send_close(&mut self, reason: &str) {
        let _ = self.send(&close(reason)).await;
    }

    async fn refuse(&mut self, reason: String) -> ConnectError {
        let _ = self.send(&close(&reason)).await;
        ConnectError::Handshake(reason)
    }
}

fn close(reason: &str) -> Envelope {
    Envelope {
        stream: 0,
        body: Body::Close(reason.into()),
    }
}

pub(crate) fn our_hello(config: &Config) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        peer_id: config.key.peer_id(),
        role: config.role,
        listen_addr: config.advertise,
        stream_window: config.effective_window(),
        max_streams: config.effective_max_streams(),
    }
}

pub(crate) fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Open => "open",
        Body::Data(_) => "data",
        Body::Fin => "fin",
        Body::Reset(_) => "reset",
        Body::Credit(_) => "credit",
        Body::Ping(_) => "ping",
        Body::Pong(_) => "pong",
        Body::Close(_) => "close",
        Body::Hello(_) => "hello",
    }
}

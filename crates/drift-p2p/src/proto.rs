//! The wire protocol: frames, the Noise handshake, and the [`Envelope`] inside every transport message.
//!
//! # Participants
//! Two endpoints joined by one TCP connection. The one that dialed is the
//! *initiator* (it opens odd stream ids), the one that accepted is the *responder*
//! (even stream ids). Both may be storage nodes ([`crate::Role::Node`]) or one may be
//! a client ([`crate::Role::Client`], the CLI); the transport treats them alike.
//!
//! # Goals
//! - Only holders of the cluster secret get past the handshake (Noise `XXpsk3`,
//!   the PSK derived from the secret), and every byte after it is encrypted and
//!   authenticated (AES-256-GCM).
//! - A peer's identity ([`crate::PeerId`]) is derived from the static key it proved,
//!   never taken from what it claims.
//! - Many concurrent request/response exchanges and long transfers share one
//!   connection without confusing replies or starving each other (streams with
//!   per-stream credit).
//! - Decoding peer input is bounded by the frame limit and never panics.
//!
//! # Non-goals
//! - Forward compatibility beyond "append only": new [`Body`] variants and new
//!   trailing [`Hello`] fields need a [`PROTOCOL_VERSION`] bump, and peers of
//!   different versions refuse each other with a clear error.
//! - Stream priorities, 0-RTT, connection migration, or hiding traffic volume.
//! - Knowing anything about files: the application's message type `M` is opaque.
//!
//! # Frames
//! Every message on the TCP stream, handshake or transport, is one frame:
//!
//! ```text
//! frame     = len:u32 (big-endian) || body[len]       len <= MAX_FRAME_LEN (65535)
//! handshake: initiator -> responder  body = Noise msg 1  (-> e)
//!            responder -> initiator  body = Noise msg 2  (<- e, ee, s, es)
//!            initiator -> responder  body = Noise msg 3  (-> s, se, psk)
//! transport: body = AES-256-GCM(ciphertext of plaintext) || tag[16]
//!            nonce = count of transport frames sent before it in that direction
//! ```
//!
//! A length above 65535 is rejected before anything is allocated. The Noise
//! protocol name is `Noise_XXpsk3_25519_AESGCM_SHA256`; the handshake payloads are empty.
//!
//! # Envelopes
//! The plaintext of every transport frame is one postcard-encoded [`Envelope`].
//! postcard integers are LEB128 varints (7 bits per byte, low group first, high
//! bit = more); byte strings and strings are `varint(len) || bytes`; an enum is
//! `varint(variant index) || fields`; `Option` is `0x00` or `0x01 || value`.
//!
//! ```text
//! envelope = stream:varint(u32) || variant:varint || fields
//! variant  name    fields                      stream   meaning
//!   0      Open    -                           new id   open a stream (initiator odd ids, responder even, increasing)
//!   1      Data    len:varint || bytes[len]     id      one postcard-encoded application message M
//!   2      Fin     -                           id      the sender will send no more Data on this stream
//!   3      Reset   len:varint || utf8[len]      id      abort the stream in both directions, with a reason
//!   4      Credit  bytes:varint(u32)            id      the receiver consumed data: the sender may send `bytes` more
//!   5      Ping    nonce:varint(u64)            0       keep-alive; answered by Pong with the same nonce
//!   6      Pong    nonce:varint(u64)            0
//!   7      Close   len:varint || utf8[len]      0       the sender closes the connection, with a reason
//!   8      Hello   version:varint(u32)          0       first transport message in each direction
//!                  || peer_id:[u8;32]
//!                  || role:varint (0 Node, 1 Client)
//!                  || listen_addr:Option<SocketAddr>  (0 V4 [u8;4] port:varint(u16) | 1 V6 [u8;16] port)
//!                  || stream_window:varint(u32) || max_streams:varint(u32)
//! ```
//!
//! Variant indices and [`Hello`]'s leading `version` are the wire format:
//! **append only**.
//!
//! # Requests and responses
//! A request is a stream: `Open`, one `Data` (the request), `Fin`; the response
//! comes back on the same stream id as `Data`..., `Fin`. Replies are matched by
//! stream id, so they can never reach another request. Long payloads are streams
//! of many `Data` messages, each at most [`MAX_MESSAGE_LEN`] bytes.
//!
//! # Flow control
//! Each side announces its per-stream window in its hello; a new stream starts
//! with that much credit in each direction. A `Data` message of `n` bytes costs
//! `n + 64` bytes of credit (so empty messages are not free); the receiver returns
//! credit with `Credit` as its application consumes messages. Sending beyond the
//! credit, an unexpected stream id, or a second hello closes the connection;
//! opening more than the announced `max_streams` gets the stream reset.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::key::{PeerId, Role};

/// The version both sides must announce in their hello.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest frame body, the Noise message limit.
pub const MAX_FRAME_LEN: usize = 65535;
/// Bytes of the AES-GCM tag at the end of each transport frame.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes of the big-endian length before each frame body.
pub(crate) const LEN_FIELD_LEN: usize = 4;
/// Largest `Data` header: stream varint (5) + variant (1) + length varint (3).
pub(crate) const DATA_HEADROOM: usize = 9;
/// Room before a `Data` message in its send buffer: the frame's length field
/// and the envelope header, so the writer can seal the frame in place.
pub(crate) const SEND_HEADROOM: usize = LEN_FIELD_LEN + DATA_HEADROOM;
/// The largest encoded application message that fits one frame.
pub const MAX_MESSAGE_LEN: usize = MAX_FRAME_LEN - TAG_LEN - DATA_HEADROOM;
/// Credit a `Data` message costs beyond its length.
pub(crate) const DATA_OVERHEAD: u32 = 64;
const DATA_VARIANT: u8 = 1;

/// One transport message: which stream it belongs to (0 for the connection) and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The stream id, or 0 for connection-level messages.
    pub stream: u32,
    /// The message.
    pub body: Body,
}

/// What an [`Envelope`] says. Variant order is the wire format: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Opens the stream.
    Open,
    /// One postcard-encoded application message.
    Data(Bytes),
    /// The sender is done sending on this stream.
    Fin,
    /// The stream is aborted, with a reason.
    Reset(String),
    /// The receiver grants this many more bytes of credit.
    Credit(u32),
    /// Keep-alive request.
    Ping(u64),
    /// Keep-alive answer.
    Pong(u64),
    /// The connection is being closed, with a reason.
    Close(String),
    /// The first message in each direction.
    Hello(Hello),
}

/// What each side announces right after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender; always the first field.
    pub protocol_version: u32,
    /// Must equal the id derived from the sender's Noise static key.
    pub peer_id: PeerId,
    /// Node or client.
    pub role: Role,
    /// Where the sender accepts connections, if it does.
    pub listen_addr: Option<SocketAddr>,
    /// Initial credit per stream the sender grants.
    pub stream_window: u32,
    /// Streams the sender accepts at once on this connection.
    pub max_streams: u32,
}

/// Why bytes are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct DecodeError(pub String);

/// Encodes an envelope (any variant) into a fresh buffer.
pub fn encode_envelope(envelope: &Envelope) -> Vec<u8> {
    // Serializing these plain types into a Vec cannot fail.
    postcard::to_allocvec(envelope).unwrap_or_default()
}

/// Decodes one envelope from a frame's plaintext. `Data` payloads are slices of
/// `plain`, not copies. Trailing bytes are an error.
pub fn decode_envelope(plain: Bytes) -> Result<Envelope, DecodeError> {
    let (stream, n) = read_varint(&plain).ok_or_else(|| DecodeError("bad stream id".into()))?;
    if plain.get(n) == Some(&DATA_VARIANT) {
        let (len, m) =
            read_varint(&plain[n + 1..]).ok_or_else(|| DecodeError("bad data length".into()))?;
        let start = n + 1 + m;
        if plain.len() - start != len as usize {
            return Err(DecodeError(format!(
                "data claims {len} bytes, frame has {}",
                plain.len() - start
            )));
        }
        return Ok(Envelope {
            stream,
            body: Body::Data(plain.slice(start..)),
        });
    }
    match postcard::take_from_bytes::<Envelope>(&plain) {
        Ok((env, [])) => Ok(env),
        Ok((_, rest)) => Err(DecodeError(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(DecodeError(e.to_string())),
    }
}

/// A `Data` envelope whose payload is `msg` postcard-encoded, built in one buffer.
///
/// `buf` is reused (a recycled send buffer). Returns the buffer and the offset where the envelope starts; the message is
/// encoded after [`SEND_HEADROOM`] bytes and the header is written right before it,
/// which leaves at least [`LEN_FIELD_LEN`] bytes before the envelope and
/// [`TAG_LEN`] bytes of spare capacity after it: room for the writer to seal
/// the frame in place.
pub(crate) fn encode_data<M: Serialize>(
    stream: u32,
    msg: &M,
    mut buf: Vec<u8>,
) -> Result<(Vec<u8>, usize), crate::StreamError> {
    buf.clear();
    buf.resize(SEND_HEADROOM, 0);
    let mut buf = postcard::serialize_with_flavor(msg, VecFlavor(buf))
        .map_err(|e| crate::StreamError::Decode(format!("cannot encode message: {e}")))?;
    let len = buf.len() - SEND_HEADROOM;
    if len > MAX_MESSAGE_LEN {
        return Err(crate::StreamError::TooLarge { len });
    }
    buf.reserve(TAG_LEN);
    Ok(write_data_header(buf, stream, len as u32))
}

/// Appends to a `Vec` with `extend_from_slice` (postcard's `to_extend` goes
/// through an iterator, several times slower for large byte strings).
struct VecFlavor(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Fills the header of a `Data` envelope whose payload starts at [`SEND_HEADROOM`].
pub(crate) fn write_data_header(mut buf: Vec<u8>, stream: u32, len: u32) -> (Vec<u8>, usize) {
    let mut header = [0u8; DATA_HEADROOM];
    let mut h = write_varint(stream, &mut header);
    header[h] = DATA_VARIANT;
    h += 1;
    h += write_varint(len, &mut header[h..]);
    let start = SEND_HEADROOM - h;
    buf[start..SEND_HEADROOM].copy_from_slice(&header[..h]);
    (buf, start)
}

fn write_varint(mut v: u32, out: &mut [u8]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

/// A postcard varint of at most 5 bytes that fits a u32, and its length.
fn read_varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_envelope() -> impl Strategy<Value = Envelope> {
        let hello = (
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<bool>(),
            any::<Option<(u32, u16)>>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(v, id, node, addr, w, s)| {
                Body::Hello(Hello {
                    protocol_version: v,
                    peer_id: PeerId(id),
                    role: if node { Role::Node } else { Role::Client },
                    listen_addr: addr
                        .map(|(ip, port)| SocketAddr::from((std::net::Ipv4Addr::from(ip), port))),
                    stream_window: w,
                    max_streams: s,
                })
            });
        let body = prop_oneof![
            Just(Body::Open),
            proptest::collection::vec(any::<u8>(), 0..2000).prop_map(|v| Body::Data(v.into())),
            Just(Body::Fin),
            ".{0,40}".prop_map(Body::Reset),
            any::<u32>().prop_map(Body::Credit),
            any::<u64>().prop_map(Body::Ping),
            any::<u64>().prop_map(Body::Pong),
            ".{0,40}".prop_map(Body::Close),
            hello,
        ];
        (any::<u32>(), body).prop_map(|(stream, body)| Envelope { stream, body })
    }

    proptest! {
        #[test]
        fn envelope_round_trips(env in arb_envelope()) {
            let bytes = encode_envelope(&env);
            prop_assert_eq!(decode_envelope(bytes.into()).unwrap(), env);
        }

        #[test]
        fn fast_data_encoding_matches_postcard(stream in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let (buf, start) = encode_data(stream, &payload, Vec::new()).unwrap();
            let inner = postcard::to_allocvec(&payload).unwrap();
            let reference = encode_envelope(&Envelope { stream, body: Body::Data(inner.clone().into()) });
            prop_assert_eq!(&buf[start..], &reference[..]);
            let decoded = decode_envelope(Bytes::copy_from_slice(&buf[start..])).unwrap();
            prop_assert_eq!(decoded, Envelope { stream, body: Body::Data(inner.into()) });
        }

        #[test]
        fn truncated_or_garbage_never_panics(env in arb_envelope(), cut in any::<prop::sample::Index>(), garbage in proptest::collection::vec(any::<u8>(), 0..200)) {
            let bytes = encode_envelope(&env);
            let cut = cut.index(bytes.len() + 1);
            let short = decode_envelope(Bytes::copy_from_slice(&bytes[..cut]));
            if cut < bytes.len() {
                // A strict prefix is never the same envelope.
                prop_assert_ne!(short.ok(), Some(env));
            }
            let _ = decode_envelope(garbage.into());
        }
    }

    #[test]
    fn max_message_fits_a_frame() {
        let msg = vec![0u8; MAX_MESSAGE_LEN - 3]; // Vec<u8> adds a 3-byte length
        let (buf, start) = encode_data(u32::MAX, &msg, Vec::new()).unwrap();
        assert_eq!(buf.len() - start + TAG_LEN, MAX_FRAME_LEN);
        let too_big = vec![0u8; MAX_MESSAGE_LEN];
        assert!(matches!(
            encode_data(1, &too_big, Vec::new()),
            Err(crate::StreamError::TooLarge { len }) if len > MAX_MESSAGE_LEN
        ));
    }
}

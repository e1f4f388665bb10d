//! Node identity: the static Noise key ([`NodeKey`]), the [`PeerId`] derived from it, and the [`Role`].

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// A node's static x25519 keypair, the long-term identity it proves in every handshake.
///
/// Persist [`NodeKey::private_bytes`] to keep the same [`PeerId`] across restarts.
/// `Debug` never prints the private key.
#[derive(Clone)]
pub struct NodeKey {
    private: [u8; 32],
    public: [u8; 32],
}

impl NodeKey {
    /// A fresh random key from the operating system's random number generator.
    pub fn generate() -> NodeKey {
        let mut private = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut private);
        NodeKey::from_private_bytes(private)
    }

    /// The key with this private scalar (any 32 bytes; x25519 clamps them).
    pub fn from_private_bytes(private: [u8; 32]) -> NodeKey {
        // snow's default resolver always provides Curve25519 (the workspace keeps
        // snow's default features), so this cannot fail.
        #[allow(clippy::expect_used)]
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow's default resolver provides x25519");
        dh.set(&private);
        let mut public = [0u8; 32];
        public.copy_from_slice(&dh.pubkey()[..32]);
        NodeKey { private, public }
    }

    /// The private scalar, to store in a key file.
    pub fn private_bytes(&self) -> [u8; 32] {
        self.private
    }

    /// The public key peers see in the handshake.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public
    }

    /// The peer id derived from the public key.
    pub fn peer_id(&self) -> PeerId {
        PeerId::from_public_key(&self.public)
    }

    pub(crate) fn private_ref(&self) -> &[u8; 32] {
        &self.private
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeKey {{ peer_id: {}, private: <redacted> }}",
            self.peer_id().short()
        )
    }
}

/// A peer's identity: BLAKE3 of its static Noise public key.
///
/// The transport derives it from the key the peer proved in the handshake, so it
/// cannot be asserted by a peer; it is safe to use as a map key, never as a path
/// without encoding (it is shown as hex).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// The id of the peer whose static public key is `public`.
    pub fn from_public_key(public: &[u8]) -> PeerId {
        PeerId(*blake3::hash(public).as_bytes())
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

/// Why a string is not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed peer id: expected 64 hex characters")]
pub struct PeerIdParseError;

impl FromStr for PeerId {
    type Err = PeerIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().as_bytes();
        if s.len() != 64 {
            return Err(PeerIdParseError);
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(PeerIdParseError)?;
            let lo = hex_val(pair[1]).ok_or(PeerIdParseError)?;
            out[i] = hi << 4 | lo;
        }
        Ok(PeerId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// What a peer is: a storage node or a client (the CLI) that only asks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Role {
    /// A storage node, a member of the cluster.
    Node,
    /// A client: it holds the secret but stores nothing.
    Client,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_debug_redacts() {
        let k = NodeKey::generate();
        let again = NodeKey::from_private_bytes(k.private_bytes());
        assert_eq!(k.public_bytes(), again.public_bytes());
        assert_eq!(k.peer_id(), again.peer_id());
        assert_ne!(k.peer_id(), NodeKey::generate().peer_id());
        let shown = format!("{k:?}");
        let private_hex: String = k
            .private_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&private_hex[..8]), "{shown}");
    }

    #[test]
    fn peer_id_display_parse() {
        let id = NodeKey::generate().peer_id();
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<PeerId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<PeerId>().unwrap(), id);
        assert_eq!(id.short(), s[..8]);
        assert!("xyz".parse::<PeerId>().is_err());
        assert!("g".repeat(64).parse::<PeerId>().is_err());
        assert!("é".repeat(32).parse::<PeerId>().is_err());
    }
}

//! Zero-copy `Bytes` fields in messages.
//!
//! Mark a `Bytes` field `#[serde(with = "drift_p2p::payload")]` and
//! [`crate::Stream::recv`] hands it out as a slice of the decrypted frame it
//! arrived in, instead of copying it out. The wire format is exactly that of
//! a plain `Bytes` field (postcard: a varint length, then the bytes). Decoded
//! any other way (outside `recv`, or by a format that does not lend its
//! input), the field is an ordinary copy.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeOwned, Deserializer, Error, Visitor};
use serde::ser::Serializer;

thread_local! {
    /// The frame being decoded on this thread by [`decode`], if any.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Decodes one `M` from the start of `frame`, letting `payload` fields borrow
/// from it; returns the message and the bytes after it.
pub(crate) fn decode<M: DeserializeOwned>(frame: &Bytes) -> postcard::Result<(M, &[u8])> {
    /// Puts back what the thread was decoding before, even on a panic.
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            FRAME.with(|f| *f.borrow_mut() = outer);
        }
    }
    let outer = FRAME.with(|f| f.borrow_mut().replace(frame.clone()));
    let _restore = Restore(outer);
    postcard::take_from_bytes::<M>(frame)
}

/// Serializes the field as plain bytes.
pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Deserializes the field, as a slice of the frame when the transport's decoder lent it.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_bytes(PayloadVisitor)
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(FRAME.with(|f| match &*f.borrow() {
            Some(frame) if lies_within(frame, v) => frame.slice_ref(v),
            _ => Bytes::copy_from_slice(v),
        }))
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }
}

/// Whether `part` is a sub-slice of `whole`'s memory (what `slice_ref` requires).
fn lies_within(whole: &Bytes, part: &[u8]) -> bool {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    at >= start && at + part.len() <= start + whole.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Zero(#[serde(with = "crate::payload")] Bytes);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain(Bytes);

    #[test]
    fn lent_frames_are_sliced_not_copied() {
        let frame =
            Bytes::from(postcard::to_allocvec(&Zero(Bytes::from(vec![7u8; 5000]))).unwrap());
        let (msg, rest) = decode::<Zero>(&frame).unwrap();
        assert!(rest.is_empty());
        assert_eq!(msg.0, vec![7u8; 5000]);
        assert!(lies_within(&frame, &msg.0), "a slice of the frame");
        // Outside `decode`, the same bytes decode to a copy.
        let (copy, _) = postcard::take_from_bytes::<Zero>(&frame).unwrap();
        assert!(!lies_within(&frame, &copy.0));
        assert_eq!(copy, msg);
        // Nothing stays lent to the thread.
        assert!(FRAME.with(|f| f.borrow().is_none()));
    }

    #[test]
    fn the_wire_format_is_that_of_plain_bytes() {
        let data = Bytes::from_static(b"same bytes on the wire");
        let zero = postcard::to_allocvec(&Zero(data.clone())).unwrap();
        assert_eq!(zero, postcard::to_allocvec(&Plain(data.clone())).unwrap());
        let frame = Bytes::from(zero);
        assert_eq!(decode::<Plain>(&frame).unwrap().0, Plain(data));
    }
}

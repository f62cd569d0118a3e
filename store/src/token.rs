//! Opaque continuation tokens: a seek position, never an offset.
//!
//! Byte layout (little-endian integers), documented in `docs/engine.md`:
//!
//! ```text
//! u8  format version (1)
//! u64 fingerprint of the request (table, index, bounds, direction)
//! u32 key length, key bytes                      -- the last key returned
//! u8  has_value; if 1: encoded scalar            -- the last attribute value (queries)
//! ```
//!
//! Resuming seeks strictly past the position, so page N costs O(log n + page). A record
//! that exists throughout the paging is returned exactly once, whatever is written
//! between pages. A token presented with a different request fails with
//! [`StoreError::InvalidToken`], as does any malformed token.

use std::hash::BuildHasher;

use crate::error::{Result, StoreError};
use crate::scalar::Scalar;

const FORMAT: u8 = 1;

/// An opaque continuation token; pass it back with the same request to get the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token(Box<[u8]>);

impl Token {
    /// The token's bytes, for sending over the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A token received back from a client; it is validated when used.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Token(bytes.into())
    }
}

/// A decoded position.
#[derive(Debug, PartialEq)]
pub(crate) struct Position {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Option<Scalar>,
}

/// Appends a canonical encoding of a scalar.
pub(crate) fn encode_scalar(s: &Scalar, out: &mut Vec<u8>) {
    out.push(s.rank());
    match s {
        Scalar::Bool(b) => out.push(u8::from(*b)),
        Scalar::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Scalar::F64(v) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        Scalar::String(v) => encode_bytes(v.as_bytes(), out),
        Scalar::Bytes(v) => encode_bytes(v, out),
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A fingerprint of a request's parameters (already canonically encoded by the caller).
pub(crate) fn fingerprint(request: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7765_6674).hash_one(request)
}

pub(crate) fn encode(fingerprint: u64, key: &[u8], value: Option<&Scalar>) -> Token {
    let mut out = Vec::with_capacity(16 + key.len());
    out.push(FORMAT);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    encode_bytes(key, &mut out);
    match value {
        Some(v) => {
            out.push(1);
            encode_scalar(v, &mut out);
        }
        None => out.push(0),
    }
    Token(out.into_boxed_slice())
}

pub(crate) fn decode(token: &Token, fingerprint: u64) -> Result<Position> {
    let mut r = Reader(&token.0);
    if r.u8()? != FORMAT {
        return Err(StoreError::InvalidToken("unknown format version"));
    }
    if r.u64()? != fingerprint {
        return Err(StoreError::InvalidToken("token belongs to a different request"));
    }
    let key = r.bytes()?.to_vec();
    let value = match r.u8()? {
        0 => None,
        1 => Some(r.scalar()?),
        _ => return Err(StoreError::InvalidToken("bad value flag")),
    };
    if !r.0.is_empty() {
        return Err(StoreError::InvalidToken("trailing bytes"));
    }
    Ok(Position { key, value })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(StoreError::InvalidToken("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        self.take(u32::from_le_bytes(b) as usize)
    }

    fn scalar(&mut self) -> Result<Scalar> {
        Ok(match self.u8()? {
            0 => Scalar::Bool(self.u8()? != 0),
            1 => Scalar::I64(self.u64()? as i64),
            2 => Scalar::F64(f64::from_bits(self.u64()?)),
            3 => {
                let s = std::str::from_utf8(self.bytes()?).map_err(|_| StoreError::InvalidToken("bad string"))?;
                Scalar::String(s.into())
            }
            4 => Scalar::Bytes(self.bytes()?.into()),
            _ => return Err(StoreError::InvalidToken("bad scalar type")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic the decoder; well-formed tokens round-trip.
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64), key in proptest::collection::vec(any::<u8>(), 0..20), v: i64) {
            let _ = decode(&Token::from_bytes(&bytes), 7);
            let t = encode(7, &key, Some(&Scalar::I64(v)));
            prop_assert_eq!(decode(&t, 7).ok(), Some(Position { key: key.clone(), value: Some(Scalar::I64(v)) }));
            prop_assert!(decode(&t, 8).is_err());
        }
    }
}

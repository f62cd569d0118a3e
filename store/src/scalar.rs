//! Attribute scalars and their total order.
//!
//! Decision (the design doc is silent): values of different types never compare equal;
//! they order by type first, `bool < i64 < f64 < string < bytes`, then by value, with
//! `f64` in IEEE total order (`-NaN < -inf < … < -0.0 < 0.0 < … < inf < NaN`). An index
//! over an attribute that some records hold as `i64` and others as `f64` therefore lists
//! all integers before all floats; clients that want one numeric order use one type.
//!
//! [`SortKey`] is the fixed-size prefix indexes cache in their nodes: comparing two sort
//! keys decides the order of two scalars without touching either record, except for
//! strings and bytes that share their first eight bytes.

use std::cmp::Ordering;

/// One attribute value.
#[derive(Clone, Debug)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    I64(i64),
    /// A 64-bit float, ordered by IEEE total order.
    F64(f64),
    /// A UTF-8 string, ordered bytewise.
    String(Box<str>),
    /// Opaque bytes, ordered bytewise.
    Bytes(Box<[u8]>),
}

impl Scalar {
    /// Position of the type in the cross-type order.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Scalar::Bool(_) => 0,
            Scalar::I64(_) => 1,
            Scalar::F64(_) => 2,
            Scalar::String(_) => 3,
            Scalar::Bytes(_) => 4,
        }
    }

    /// Bytes held on the heap beyond the enum itself.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Scalar::String(s) => s.len(),
            Scalar::Bytes(b) => b.len(),
            _ => 0,
        }
    }

    /// The order-preserving fixed-size prefix of this value.
    pub(crate) fn sort_key(&self) -> SortKey {
        let prefix = match self {
            Scalar::Bool(b) => u64::from(*b),
            Scalar::I64(v) => (*v as u64) ^ (1 << 63),
            Scalar::F64(v) => {
                let bits = v.to_bits();
                // IEEE total order as an unsigned integer: flip all bits of negatives,
                // only the sign bit of positives.
                if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) }
            }
            Scalar::String(s) => byte_prefix(s.as_bytes()),
            Scalar::Bytes(b) => byte_prefix(b),
        };
        SortKey { rank: self.rank(), prefix }
    }
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scalar {}

impl PartialOrd for Scalar {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scalar {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            (Scalar::I64(a), Scalar::I64(b)) => a.cmp(b),
            (Scalar::F64(a), Scalar::F64(b)) => a.total_cmp(b),
            (Scalar::String(a), Scalar::String(b)) => a.cmp(b),
            (Scalar::Bytes(a), Scalar::Bytes(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl From<i64> for Scalar {
    fn from(v: i64) -> Self {
        Scalar::I64(v)
    }
}

impl From<f64> for Scalar {
    fn from(v: f64) -> Self {
        Scalar::F64(v)
    }
}

impl From<bool> for Scalar {
    fn from(v: bool) -> Self {
        Scalar::Bool(v)
    }
}

impl From<&str> for Scalar {
    fn from(v: &str) -> Self {
        Scalar::String(v.into())
    }
}

impl From<&[u8]> for Scalar {
    fn from(v: &[u8]) -> Self {
        Scalar::Bytes(v.into())
    }
}

/// The first eight bytes, big-endian, zero-padded: `a <= b` implies `prefix(a) <= prefix(b)`.
pub(crate) fn byte_prefix(b: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = b.len().min(8);
    buf[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(buf)
}

/// A scalar's type rank and order-preserving 64-bit prefix. For bools, integers and
/// floats equal sort keys mean equal values; for strings and bytes they mean "compare the
/// full values".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SortKey {
    pub(crate) rank: u8,
    pub(crate) prefix: u64,
}

impl SortKey {
    /// Whether equal sort keys leave the order undecided.
    pub(crate) fn needs_full_compare(self) -> bool {
        self.rank >= 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Scalar> {
        prop_oneof![
            any::<bool>().prop_map(Scalar::Bool),
            any::<i64>().prop_map(Scalar::I64),
            any::<f64>().prop_map(Scalar::F64),
            Just(Scalar::F64(f64::NAN)),
            Just(Scalar::F64(-0.0)),
            "[a-c]{0,10}".prop_map(|s| Scalar::String(s.into())),
            proptest::collection::vec(0u8..3, 0..10).prop_map(|b| Scalar::Bytes(b.into())),
        ]
    }

    proptest! {
        /// The cached sort key never contradicts the full order.
        #[test]
        fn sort_key_is_monotone(a in scalar(), b in scalar()) {
            let (ka, kb) = (a.sort_key(), b.sort_key());
            match ka.cmp(&kb) {
                Ordering::Equal if !ka.needs_full_compare() => prop_assert_eq!(a.cmp(&b), Ordering::Equal),
                Ordering::Equal => {}
                ord => prop_assert_eq!(a.cmp(&b), ord),
            }
        }
    }
}

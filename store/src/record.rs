//! Records: immutable once built, shared by `Arc` between the live view, every index and
//! every snapshot that holds them.
//!
//! Layout decision: key and value live in one heap allocation (`data`, key first), so a
//! point read touches the record and one more cache line, and a record costs two
//! allocations plus one for its attributes (none when it has none). Attribute names are
//! interned per table ([`Names`]), so a million records naming `priority` share one string.

use std::sync::Arc;

use crate::scalar::Scalar;

/// One stored record: key, opaque value, indexed attributes, and the version (log index)
/// of the write that produced it.
#[derive(Debug)]
pub struct Record {
    /// Hash of the key under the owning store's hasher; stable for the process lifetime.
    hash: u64,
    version: u64,
    data: Box<[u8]>,
    key_len: u32,
    attrs: Box<[Attr]>,
}

/// One named attribute of a record.
#[derive(Clone, Debug)]
pub struct Attr {
    name: Arc<str>,
    value: Scalar,
}

impl Attr {
    /// The attribute's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attribute's value.
    pub fn value(&self) -> &Scalar {
        &self.value
    }
}

impl Record {
    /// Builds a record; `attrs` must be sorted by name without duplicates (the table does
    /// this) and the key no longer than `u32::MAX` (limits are far below).
    pub(crate) fn new(hash: u64, version: u64, key: &[u8], value: &[u8], attrs: Box<[Attr]>) -> Self {
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Record {
            hash,
            version,
            data: data.into_boxed_slice(),
            key_len: u32::try_from(key.len()).unwrap_or(u32::MAX),
            attrs,
        }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    /// The log index of the write that last produced this record.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Attributes, sorted by name.
    pub fn attrs(&self) -> &[Attr] {
        &self.attrs
    }

    /// The value of one attribute.
    pub fn attr(&self, name: &str) -> Option<&Scalar> {
        self.attrs.iter().find(|a| &*a.name == name).map(|a| &a.value)
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// Bytes this record holds on the heap: its `Arc` allocation, key and value, attributes.
    /// Interned names are charged once per table, not here.
    pub(crate) fn heap_bytes(&self) -> usize {
        let arc = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Record>();
        let attrs: usize = self.attrs.iter().map(|a| std::mem::size_of::<Attr>() + a.value.heap_bytes()).sum();
        arc + self.data.len() + attrs
    }
}

/// Interned attribute names of one table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Names {
    set: hashbrown::HashSet<Arc<str>>,
    bytes: usize,
}

impl Names {
    pub(crate) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.set.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.bytes += 2 * std::mem::size_of::<usize>() + name.len();
        self.set.insert(n.clone());
        n
    }

    /// Builds a record's attribute list: interned, sorted by name, last value wins.
    pub(crate) fn attrs<'a>(&mut self, attrs: impl ExactSizeIterator<Item = (&'a str, &'a Scalar)>) -> Box<[Attr]> {
        if attrs.len() == 0 {
            return Box::default();
        }
        let mut out: Vec<Attr> = attrs.map(|(n, v)| Attr { name: self.intern(n), value: v.clone() }).collect();
        // Stable sort keeps input order among equal names; keep the last of each.
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.reverse();
        out.dedup_by(|later, earlier| later.name == earlier.name);
        out.reverse();
        out.into_boxed_slice()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes + self.set.allocation_size()
    }
}

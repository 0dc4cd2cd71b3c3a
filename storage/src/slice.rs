//! [`Slice`]: the bytes of a key or value read from a store.

use std::{borrow::Borrow, fmt, ops::Deref};

use sled::IVec;

/// The bytes of a key or value read from a store: read-only, and shared, so cloning one (or a
/// scanned key without its table byte) copies nothing; short ones live inline. Derefs to
/// `[u8]`, which is all a reader needs (`serde_json::from_slice(&value)`,
/// `keys::decode_u64(&value)`, `value.to_vec()` to own it).
///
/// It wraps sled's buffer so that nothing above this crate names sled: the engine below can
/// change without changing a caller.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slice(IVec);

impl Slice {
    /// `len` bytes of `self` from `start`, sharing its buffer.
    pub(crate) fn subslice(&self, start: usize, len: usize) -> Self {
        Slice(self.0.subslice(start, len))
    }
}

impl From<IVec> for Slice {
    fn from(bytes: IVec) -> Self {
        Slice(bytes)
    }
}

impl From<&[u8]> for Slice {
    fn from(bytes: &[u8]) -> Self {
        Slice(IVec::from(bytes))
    }
}

impl Deref for Slice {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for Slice {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<[u8]> for Slice {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Slice;

    #[test]
    fn a_subslice_is_the_bytes_it_names() {
        let key = Slice::from(&b"\x03user\xffdevice"[..]);
        assert_eq!(&*key.subslice(1, 4), b"user");
        assert_eq!(&*key.subslice(1, key.len() - 1), b"user\xffdevice");
        assert_eq!(key.to_vec(), b"\x03user\xffdevice".to_vec());
    }
}

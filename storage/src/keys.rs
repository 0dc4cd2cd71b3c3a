//! Typed keys: big-endian integers and `0xFF`-terminated strings, so byte order is logical order.

/// Separator after each string part. It never occurs in UTF-8, so parts cannot collide.
pub const SEP: u8 = 0xFF;

/// A key under construction.
#[derive(Debug, Default, Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new() -> Self {
        Key(Vec::with_capacity(64))
    }

    /// Appends a string part followed by the separator.
    pub fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(SEP);
        self
    }

    /// Appends a big-endian u64, which sorts numerically.
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// Continues a key built earlier.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Key(bytes)
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl From<Key> for Vec<u8> {
    fn from(k: Key) -> Self {
        k.0
    }
}

/// Decodes a big-endian u64 from the first 8 bytes (0 when shorter: a missing counter).
pub fn decode_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// Decodes the big-endian u64 at the end of a key.
pub fn trailing_u64(key: &[u8]) -> u64 {
    decode_u64(&key[key.len().saturating_sub(8)..])
}

/// Splits the string parts of a key (each terminated by [`SEP`]).
pub fn str_parts(key: &[u8]) -> impl Iterator<Item = &str> {
    key.split(|b| *b == SEP)
        .filter_map(|part| std::str::from_utf8(part).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sort_numerically() {
        let a = Key::new().u64(2).into_vec();
        let b = Key::new().u64(256).into_vec();
        assert!(a < b);
        assert_eq!(trailing_u64(&b), 256);
    }

    #[test]
    fn string_parts_do_not_collide() {
        let a = Key::new().str("ab").str("c").into_vec();
        let b = Key::new().str("a").str("bc").into_vec();
        assert_ne!(a, b);
        assert_eq!(str_parts(&a).take(2).collect::<Vec<_>>(), vec!["ab", "c"]);
    }
}

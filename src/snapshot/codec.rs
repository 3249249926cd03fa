//! The primitives of the snapshot file: little-endian integers, length-prefixed
//! byte strings, and a reader that turns any truncation or bad value into
//! [`Corrupt`] instead of a panic.

/// The file ended early or held a value that cannot be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub String);

#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length or index: the file format caps them at `u32::MAX`.
    pub fn len(&mut self, v: usize) {
        self.u32(u32::try_from(v).expect("snapshots hold fewer than 2^32 items"));
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn fixed(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// `None` as 0, `Some(v)` as 1 followed by `v`.
    pub fn option<T>(&mut self, v: Option<T>, mut put: impl FnMut(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                put(self, v);
            }
        }
    }

    pub fn seq<T>(&mut self, items: &[T], mut put: impl FnMut(&mut Self, &T)) {
        self.len(items.len());
        for item in items {
            put(self, item);
        }
    }

    pub fn strs<S: AsRef<str>>(&mut self, items: &[S]) {
        self.seq(items, |e, s| e.str(s.as_ref()));
    }
}

pub struct Decoder<'a> {
    rest: &'a [u8],
}

pub type Result<T> = std::result::Result<T, Corrupt>;

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Corrupt(format!(
                "truncated: {n} bytes needed, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.fixed(N)?.try_into().expect("fixed returned N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.fixed(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Corrupt(format!("bad boolean {other}"))),
        }
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn len(&mut self) -> Result<usize> {
        Ok(self.u32()? as usize)
    }

    /// A count of items that take at least `min_size` bytes each, checked against
    /// what is left so that a corrupt count cannot make a huge allocation.
    pub fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.len()?;
        if n.saturating_mul(min_size.max(1)) > self.rest.len() {
            return Err(Corrupt(format!("count {n} exceeds the data left")));
        }
        Ok(n)
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.fixed(n)
    }

    pub fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|e| Corrupt(format!("bad UTF-8: {e}")))
    }

    pub fn string(&mut self) -> Result<String> {
        self.str().map(str::to_owned)
    }

    pub fn option<T>(&mut self, get: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => get(self).map(Some),
            other => Err(Corrupt(format!("bad option tag {other}"))),
        }
    }

    /// A sequence whose items take at least `min_size` bytes each.
    pub fn seq<T>(
        &mut self,
        min_size: usize,
        mut get: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.count(min_size)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(get(self)?);
        }
        Ok(items)
    }

    pub fn strings(&mut self) -> Result<Vec<String>> {
        self.seq(4, Self::string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_written() {
        let mut e = Encoder::default();
        e.u8(7);
        e.bool(true);
        e.u32(0xdead_beef);
        e.u64(u64::MAX - 1);
        e.i32(-5);
        e.str("héllo");
        e.option(Some(3u32), Encoder::u32);
        e.option(None::<u32>, Encoder::u32);
        e.strs(&["a", "", "b/c"]);
        let mut d = Decoder::new(&e.buf);
        assert_eq!(d.u8().unwrap(), 7);
        assert!(d.bool().unwrap());
        assert_eq!(d.u32().unwrap(), 0xdead_beef);
        assert_eq!(d.u64().unwrap(), u64::MAX - 1);
        assert_eq!(d.i32().unwrap(), -5);
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.option(Decoder::u32).unwrap(), Some(3));
        assert_eq!(d.option(Decoder::u32).unwrap(), None);
        assert_eq!(d.strings().unwrap(), ["a", "", "b/c"]);
        assert!(d.is_empty());
    }

    #[test]
    fn truncation_and_bad_values_are_errors_not_panics() {
        let mut e = Encoder::default();
        e.str("abcdef");
        for cut in 0..e.buf.len() {
            assert!(Decoder::new(&e.buf[..cut]).str().is_err(), "cut at {cut}");
        }
        assert!(Decoder::new(&[2]).bool().is_err());
        assert!(Decoder::new(&[9]).option(Decoder::u8).is_err());
        assert!(Decoder::new(&[2, 0, 0, 0, 0xff, 0xfe]).str().is_err());
        // A huge count is refused before anything is allocated.
        assert!(Decoder::new(&[0xff, 0xff, 0xff, 0xff]).strings().is_err());
    }
}

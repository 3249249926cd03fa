//! Fan-out of blocking reads over the machine's cores, one [`Reader`] per thread.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Error, Reader, Tree};

/// Items are handed out in chunks: small enough to balance uneven files, large
/// enough that the shared counter is not contended.
const CHUNK: usize = 64;

/// Maps `f` over `items` on up to `available_parallelism` threads, each with its
/// own reader, and returns the results in input order.
///
/// Results come back as the threads' chunks, put in order and flattened as the
/// caller iterates: no index per result, no sort of every result and no second
/// vector of them (60,000 file hashes at 10,000 apps).
pub fn par_map<T, R, F>(tree: &dyn Tree, items: &[T], f: F) -> Result<InOrder<R>, Error>
where
    T: Sync,
    R: Send,
    F: Fn(&mut dyn Reader, &mut Vec<u8>, &T) -> R + Sync,
{
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().div_ceil(CHUNK))
        .max(1);
    let next = AtomicUsize::new(0);
    let work = || -> Result<Chunks<R>, Error> {
        let mut reader = tree.reader()?;
        let mut buf = Vec::new();
        let mut chunks = Vec::new();
        loop {
            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= items.len() {
                return Ok(chunks);
            }
            let results = items[start..(start + CHUNK).min(items.len())]
                .iter()
                .map(|item| f(reader.as_mut(), &mut buf, item))
                .collect();
            chunks.push((start, results));
        }
    };
    // The calling thread works too: one thread fewer to start, and results
    // that outlive the call (parsed specs) are allocated in its own malloc arena
    // rather than spread over short-lived threads' arenas, which fragments them.
    let parts: Vec<Result<Chunks<R>, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut parts = vec![work()];
        for handle in handles {
            match handle.join() {
                Ok(part) => parts.push(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        parts
    });
    let mut chunks = Vec::with_capacity(items.len().div_ceil(CHUNK));
    for part in parts {
        chunks.extend(part?);
    }
    chunks.sort_unstable_by_key(|(start, _)| *start);
    Ok(InOrder {
        chunks: chunks.into_iter(),
        current: Vec::new().into_iter(),
        left: items.len(),
    })
}

/// One thread's results: (index of the chunk's first item, its results).
type Chunks<R> = Vec<(usize, Vec<R>)>;

/// The results of [`par_map`], chunk after chunk; each chunk is freed once
/// consumed.
pub struct InOrder<R> {
    chunks: <Chunks<R> as IntoIterator>::IntoIter,
    current: std::vec::IntoIter<R>,
    left: usize,
}

impl<R> Iterator for InOrder<R> {
    type Item = R;

    fn next(&mut self) -> Option<R> {
        loop {
            if let Some(result) = self.current.next() {
                self.left -= 1;
                return Some(result);
            }
            self.current = self.chunks.next()?.1.into_iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<R> ExactSizeIterator for InOrder<R> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemTree;

    #[test]
    fn results_come_back_in_input_order() {
        let tree = MemTree::default();
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 10 * CHUNK + 7] {
            let items: Vec<usize> = (0..n).collect();
            let results = par_map(&tree, &items, |_, _, i| i * 2).unwrap();
            assert_eq!(results.len(), n);
            assert_eq!(
                results.collect::<Vec<_>>(),
                items.iter().map(|i| i * 2).collect::<Vec<_>>()
            );
        }
    }
}

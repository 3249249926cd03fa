//! Fan-out of blocking reads over the machine's cores, one [`Reader`] per thread.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Error, Reader, Tree};

/// Items are handed out in chunks: small enough to balance uneven files, large
/// enough that the shared counter is not contended.
const CHUNK: usize = 64;

/// Maps `f` over `items` on up to `available_parallelism` threads, each with its
/// own reader, and returns the results in input order.
pub fn par_map<T, R, F>(tree: &dyn Tree, items: &[T], f: F) -> Result<Vec<R>, Error>
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
    let work = || -> Result<Vec<(usize, R)>, Error> {
        let mut reader = tree.reader()?;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= items.len() {
                return Ok(out);
            }
            for (i, item) in items.iter().enumerate().skip(start).take(CHUNK) {
                out.push((i, f(reader.as_mut(), &mut buf, item)));
            }
        }
    };
    // The calling thread works too: one thread fewer to start, and results
    // that outlive the call (parsed specs) are allocated in its own malloc arena
    // rather than spread over short-lived threads' arenas, which fragments them.
    let parts: Vec<Result<Vec<(usize, R)>, Error>> = std::thread::scope(|s| {
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
    let mut indexed = Vec::with_capacity(items.len());
    for part in parts {
        indexed.extend(part?);
    }
    indexed.sort_unstable_by_key(|(i, _)| *i);
    Ok(indexed.into_iter().map(|(_, r)| r).collect())
}

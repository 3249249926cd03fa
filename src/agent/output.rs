//! What a hook prints, on its way to the agent's own stdout and stderr: every
//! secret value (the agent's credentials, the app's secrets) is replaced by
//! [`REDACTED`] before a byte is written, whatever the chunking of the pipe, and
//! the last bytes of stderr are kept for the `failed` report.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// What replaces a secret value.
pub(super) const REDACTED: &str = "***";

/// Bytes of stderr kept for the report (`canopy_report` keeps 4096 of a message).
pub(super) const STDERR_TAIL: usize = 2048;

/// Replaces secrets in a byte stream that arrives in pieces. A secret split
/// across two reads is still found: the last `longest - 1` bytes of what has
/// arrived are held back until more comes (or the stream ends), since they
/// may be the start of one.
pub(super) struct Redactor {
    secrets: Vec<Vec<u8>>,
    /// Arrived, not yet written: raw bytes, never redacted twice.
    pending: Vec<u8>,
    hold: usize,
}

impl Redactor {
    pub(super) fn new(secrets: &[&str]) -> Redactor {
        let secrets: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let hold = secrets.iter().map(Vec::len).max().unwrap_or(1) - 1;
        Redactor {
            secrets,
            pending: Vec::new(),
            hold,
        }
    }

    /// Takes `chunk`; returns what can be written now, redacted.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let safe = self.pending.len().saturating_sub(self.hold);
        self.take(safe)
    }

    /// The rest, redacted: the stream ended, so no secret can complete now.
    pub(super) fn finish(&mut self) -> Vec<u8> {
        self.take(self.pending.len())
    }

    /// Redacts and removes the pending bytes before `stop`, and any secret that
    /// starts before it (which ends within `pending`: `stop` leaves room for
    /// the longest).
    fn take(&mut self, stop: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(stop);
        let mut at = 0;
        while at < stop {
            let rest = &self.pending[at..];
            match self.secrets.iter().find(|s| rest.starts_with(s)) {
                Some(secret) => {
                    out.extend_from_slice(REDACTED.as_bytes());
                    at += secret.len();
                }
                None => {
                    out.push(self.pending[at]);
                    at += 1;
                }
            }
        }
        self.pending.drain(..at);
        out
    }
}

/// Where a hook's stream goes.
#[derive(Clone, Copy)]
pub(super) enum Sink {
    Stdout,
    Stderr,
}

/// Copies `from` to the agent's `sink`, redacted, until every holder of the
/// pipe closed it; with `tail`, keeps its last [`STDERR_TAIL`] bytes there.
pub(super) async fn forward(
    mut from: impl AsyncRead + Unpin,
    sink: Sink,
    secrets: Vec<String>,
    tail: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let mut redactor = Redactor::new(&secrets);
    let mut buf = [0u8; 4096];
    loop {
        let out = match from.read(&mut buf).await {
            Ok(0) | Err(_) => redactor.finish(),
            Ok(n) => redactor.push(&buf[..n]),
        };
        write(sink, &out, tail.as_deref());
        if redactor.pending.is_empty() && out.is_empty() {
            return;
        }
    }
}

fn write(sink: Sink, bytes: &[u8], tail: Option<&Mutex<Vec<u8>>>) {
    if bytes.is_empty() {
        return;
    }
    let _ = match sink {
        Sink::Stdout => std::io::Write::write_all(&mut std::io::stdout(), bytes),
        Sink::Stderr => std::io::Write::write_all(&mut std::io::stderr(), bytes),
    };
    if let Some(Ok(mut tail)) = tail.map(Mutex::lock) {
        tail.extend_from_slice(bytes);
        if tail.len() > STDERR_TAIL {
            let cut = tail.len() - STDERR_TAIL;
            // Start at a character boundary.
            let start = (cut..tail.len())
                .find(|&i| tail[i] & 0xC0 != 0x80)
                .unwrap_or(tail.len());
            tail.drain(..start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redacted_in_pieces(text: &[u8], secrets: &[&str], cuts: &[usize]) -> Vec<u8> {
        let mut redactor = Redactor::new(secrets);
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, text.len());
            out.extend(redactor.push(&text[start..cut]));
            start = cut;
        }
        out.extend(redactor.push(&text[start..]));
        out.extend(redactor.finish());
        out
    }

    #[test]
    fn a_secret_split_across_reads_is_still_redacted() {
        let text = b"login s3cret-pw ok; db=app-secret-1; again s3cret-pw";
        let secrets = ["s3cret-pw", "app-secret-1"];
        let want = b"login *** ok; db=***; again ***".to_vec();
        for cut in 0..=text.len() {
            assert_eq!(
                redacted_in_pieces(text, &secrets, &[cut]),
                want,
                "cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (0..text.len()).collect();
        assert_eq!(redacted_in_pieces(text, &secrets, &every_byte), want);
        assert_eq!(
            redacted_in_pieces(b"no secrets here", &[], &[3]),
            b"no secrets here"
        );
    }

    proptest! {
        /// Whatever the pieces, the output is the whole-text redaction.
        #[test]
        fn pieces_never_change_the_result(
            words in proptest::collection::vec(prop_oneof!["pw", "x", "pwx", "p", "w"], 0..30),
            cuts in proptest::collection::vec(0usize..60, 0..6),
        ) {
            let text = words.concat();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let whole = text.replace("pwx", "***").replace("pw", "***");
            prop_assert_eq!(
                String::from_utf8(redacted_in_pieces(text.as_bytes(), &["pwx", "pw"], &cuts)).unwrap(),
                whole
            );
        }
    }
}

//! App artifacts (DESIGN sections 6 and 7): one app's files at one revision, as
//! an uncompressed tar, for the child that applies what a signal announced. The
//! HTTP endpoint that serves them is the server's (`server/artifact.rs`).
//!
//! Files come from the mirror's Git objects, never from a work tree, and the tar
//! is deterministic: the same files give the same bytes.
//!
//! - `select`: which files make the app. For the app's current desired
//!   revision, the manifest stored in Redis says, and every blob is checked
//!   against it; for another revision, the layout of that commit decides, as a
//!   poll would.
//! - `build`: reads and checks those files and packs them; the digest is
//!   computed with `digest`'s manifest code from the very bytes that went into
//!   the tar.
//! - `tarball`: the deterministic tar writer.
//!
//! This module only reads: it never writes Redis or the mirror, and it knows
//! nothing of HTTP.

mod build;
mod select;
mod tarball;

pub use build::{Artifact, ArtifactError, build_tar, parse_revision};

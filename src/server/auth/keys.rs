//! The identity provider's public keys: a JWK set read from `jwks_url` or
//! `jwks_file`, kept in memory, and read again when it is older than
//! `jwks_max_age` or a token names a key it does not hold, at most once per
//! `jwks_min_interval` however many requests ask.
//!
//! Only RSA and ECDSA (P-256, P-384) signing keys with a `kid` are kept: an
//! `oct` (HMAC) key in a set is never used, so a public set cannot turn into a
//! shared secret. A read that fails keeps the keys already held and is logged:
//! it never lets a token in, and a token signed by a key that is not held is
//! refused. The set's contents are public; nothing here is secret.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{JwksSource, OidcConfig};

/// Largest JWK set read: a provider's holds a few keys of a few KiB.
pub(super) const MAX_JWKS_BYTES: usize = 256 << 10;
/// Deadline of one fetch of `jwks_url`, connection included: requests that
/// need the keys wait for it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the keys could not be read. Names the source, never more than the
/// public set holds.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("failed to fetch the JWK set from {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the JWK set at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("failed to read the JWK set file {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the JWK set from {source_name} is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge { source_name: String },
    #[error("the JWK set from {source_name} is not valid JSON")]
    Json {
        source_name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the JWK set from {source_name} holds no usable signing key (RSA, or EC on P-256 or P-384, with a kid)"
    )]
    NoKeys { source_name: String },
    #[error("failed to build the HTTP client for the JWK set")]
    Client(#[source] reqwest::Error),
}

/// One verification key of the set.
#[derive(Clone)]
pub(super) struct Key {
    pub decoding: DecodingKey,
    /// `Rsa` or `Ec`.
    pub family: AlgorithmFamily,
    /// For EC keys: the curve, which fixes the algorithm (ES256 on P-256).
    pub curve: Option<EllipticCurve>,
    /// The key's own `alg`, when the set names one: then only it is accepted.
    pub algorithm: Option<Algorithm>,
}

impl Key {
    /// Whether a token signed with `algorithm` may be verified with this key.
    pub fn fits(&self, algorithm: Algorithm) -> bool {
        let curve_fits = match (&self.curve, algorithm) {
            (Some(EllipticCurve::P256), Algorithm::ES256) => true,
            (Some(EllipticCurve::P384), Algorithm::ES384) => true,
            (Some(_), _) => false,
            (None, _) => true,
        };
        self.family == algorithm.family()
            && curve_fits
            && self.algorithm.is_none_or(|own| own == algorithm)
    }
}

/// The keys as last read.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Key>,
    /// When they were read; `None` before the first successful read.
    read_at: Option<Instant>,
}

/// When reads were tried, under the lock that lets one run at a time.
#[derive(Default)]
struct Attempts {
    last: Option<Instant>,
    last_failed: bool,
}

/// What looking a key up found.
pub(super) enum Lookup {
    Found(Key),
    /// Not in the set, even after reading it again (or reading it was not
    /// allowed yet); `read_failed` if the last read failed.
    Unknown {
        read_failed: bool,
    },
}

/// The provider's keys, shared by every request.
pub(super) struct Keys {
    source: JwksSource,
    client: reqwest::Client,
    max_age: Duration,
    min_interval: Duration,
    current: RwLock<Arc<KeySet>>,
    attempts: Mutex<Attempts>,
}

impl Keys {
    pub fn new(config: &OidcConfig) -> Result<Keys, KeysError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // A JWK set moved elsewhere is a change the config should make.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("canopy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(KeysError::Client)?;
        Ok(Keys {
            source: config.jwks.clone(),
            client,
            max_age: config.jwks_max_age,
            min_interval: config.jwks_min_interval,
            current: RwLock::default(),
            attempts: Mutex::default(),
        })
    }

    /// Reads the set now, whatever the interval: at start, so that a bad key
    /// file stops the daemon before it serves.
    pub async fn load(&self) -> Result<usize, KeysError> {
        let mut attempts = self.attempts.lock().await;
        attempts.last = Some(Instant::now());
        let result = self.read().await;
        attempts.last_failed = result.is_err();
        let count = result.as_ref().map(|keys| keys.len()).unwrap_or(0);
        self.install(result?);
        Ok(count)
    }

    /// The key named `kid`: from memory while the set is fresh, else after
    /// reading the set again (if the interval allows).
    pub async fn get(&self, kid: &str) -> Lookup {
        let current = self.snapshot();
        let fresh = current
            .read_at
            .is_some_and(|at| at.elapsed() < self.max_age);
        if fresh && let Some(key) = current.keys.get(kid) {
            return Lookup::Found(key.clone());
        }
        let read_failed = self.refresh().await;
        match self.snapshot().keys.get(kid) {
            Some(key) => Lookup::Found(key.clone()),
            None => Lookup::Unknown { read_failed },
        }
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn install(&self, keys: HashMap<String, Key>) {
        let set = Arc::new(KeySet {
            keys,
            read_at: Some(Instant::now()),
        });
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = set;
    }

    /// Reads the set again unless a read started less than `min_interval` ago
    /// (then the requests that waited for it use its result). Whether the last
    /// read failed.
    async fn refresh(&self) -> bool {
        let mut attempts = self.attempts.lock().await;
        if attempts
            .last
            .is_some_and(|at| at.elapsed() < self.min_interval)
        {
            return attempts.last_failed;
        }
        attempts.last = Some(Instant::now());
        match self.read().await {
            Ok(keys) => {
                tracing::info!(source = %self.source, keys = keys.len(), "identity provider keys read");
                self.install(keys);
                attempts.last_failed = false;
            }
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error),
                    "identity provider keys could not be read: the keys already held stay in use");
                attempts.last_failed = true;
            }
        }
        attempts.last_failed
    }

    async fn read(&self) -> Result<HashMap<String, Key>, KeysError> {
        let bytes = match &self.source {
            JwksSource::Url(url) => self.fetch(url).await?,
            JwksSource::File(path) => read_file(path).await?,
        };
        parse(&bytes, &self.source.to_string())
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, KeysError> {
        let fetch_error = |source| KeysError::Fetch {
            url: url.to_owned(),
            source,
        };
        let mut response = self.client.get(url).send().await.map_err(fetch_error)?;
        if !response.status().is_success() {
            return Err(KeysError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let too_large = || KeysError::TooLarge {
            source_name: url.to_owned(),
        };
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Reads the key file on the blocking pool (a file system can stall).
async fn read_file(path: &Path) -> Result<Vec<u8>, KeysError> {
    use std::io::Read;
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        std::fs::File::open(&owned)
            .and_then(|file| file.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map(|_| bytes)
    })
    .await
    .unwrap_or_else(|join| Err(std::io::Error::other(join)));
    let bytes = read.map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(KeysError::TooLarge {
            source_name: path.display().to_string(),
        });
    }
    Ok(bytes)
}

/// The usable keys of a JWK set, by `kid`. Keys of other types, for
/// encryption, or without a `kid` are left out; a set with none left is an
/// error (a provider always has one).
pub(super) fn parse(bytes: &[u8], source_name: &str) -> Result<HashMap<String, Key>, KeysError> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|source| KeysError::Json {
        source_name: source_name.to_owned(),
        source,
    })?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else {
            continue;
        };
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|usage| *usage != PublicKeyUse::Signature)
        {
            continue;
        }
        // A named algorithm canopy does not verify with (HS256, RSA-OAEP...)
        // makes the key unusable, not any algorithm's.
        let algorithm = match jwk.common.key_algorithm {
            Some(named) => match Algorithm::try_from(named) {
                Ok(algorithm) => Some(algorithm),
                Err(_) => continue,
            },
            None => None,
        };
        let (decoding, family, curve) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                match DecodingKey::from_rsa_components(&rsa.n, &rsa.e) {
                    Ok(key) => (key, AlgorithmFamily::Rsa, None),
                    Err(_) => continue,
                }
            }
            AlgorithmParameters::EllipticCurve(ec)
                if matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) =>
            {
                match DecodingKey::from_ec_components(&ec.x, &ec.y) {
                    Ok(key) => (key, AlgorithmFamily::Ec, Some(ec.curve.clone())),
                    Err(_) => continue,
                }
            }
            _ => continue,
        };
        keys.insert(
            kid.clone(),
            Key {
                decoding,
                family,
                curve,
                algorithm,
            },
        );
    }
    if keys.is_empty() {
        return Err(KeysError::NoKeys {
            source_name: source_name.to_owned(),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    fn set(keys: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn only_signing_keys_with_a_kid_are_kept() {
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let keys = parse(
            &set(serde_json::json!([
                {"kty": "RSA", "kid": "rsa1", "n": RSA_N, "e": "AQAB", "use": "sig", "alg": "RS256"},
                {"kty": "RSA", "kid": "enc", "n": RSA_N, "e": "AQAB", "use": "enc"},
                {"kty": "RSA", "n": RSA_N, "e": "AQAB"},
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                {"kty": "RSA", "kid": "oaep", "n": RSA_N, "e": "AQAB", "alg": "RSA-OAEP"},
                {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                ec,
            ])),
            "test",
        )
        .unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ec1", "rsa1"]);
        let rsa = &keys["rsa1"];
        assert!(rsa.fits(Algorithm::RS256));
        assert!(!rsa.fits(Algorithm::RS512), "the key names RS256");
        assert!(!rsa.fits(Algorithm::ES256) && !rsa.fits(Algorithm::HS256));
        let ec = &keys["ec1"];
        assert!(ec.fits(Algorithm::ES256));
        assert!(!ec.fits(Algorithm::ES384) && !ec.fits(Algorithm::RS256));
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error_naming_its_source() {
        for bytes in [
            set(serde_json::json!([{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}])),
            set(serde_json::json!([])),
        ] {
            let err = parse(&bytes, "https://idp/keys").err().unwrap().to_string();
            assert!(
                err.contains("no usable signing key") && err.contains("https://idp/keys"),
                "{err}"
            );
        }
        let err = parse(b"<html>", "https://idp/keys")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "the JWK set from https://idp/keys is not valid JSON");
    }
}

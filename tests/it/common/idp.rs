//! A test identity provider: RSA and P-256 keys made in the test, JWTs signed
//! with them (by aws-lc-rs directly, not by the JWT crate under test, so that
//! the tests can also sign what no library would: `alg: none`, HS256 with a
//! public key, a mismatched `kid`), and its JWK set served over real HTTP on a
//! loopback port 0, or written to a file.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaPublicKeyComponents,
};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// The issuer and audience the tests configure.
pub const ISSUER: &str = "https://idp.test/realms/platform";
pub const AUDIENCE: &str = "canopy";

enum Pair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
}

/// A signing key of the provider, with its `kid`.
pub struct TestKey {
    pub kid: String,
    pair: Pair,
}

impl TestKey {
    /// A 2048-bit RSA key, for RS256.
    pub fn rsa(kid: &str) -> TestKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("an RSA key");
        TestKey {
            kid: kid.to_owned(),
            pair: Pair::Rsa(pair),
        }
    }

    /// A P-256 key, for ES256.
    pub fn ec(kid: &str) -> TestKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("an EC key");
        TestKey {
            kid: kid.to_owned(),
            pair: Pair::Ec(pair),
        }
    }

    /// The algorithm the key signs with.
    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "RS256",
            Pair::Ec(_) => "ES256",
        }
    }

    /// The public key as a JWK, as a provider publishes it.
    pub fn jwk(&self) -> Value {
        match &self.pair {
            Pair::Rsa(pair) => {
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": B64.encode(&public.n), "e": B64.encode(&public.e)})
            }
            Pair::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
            }
        }
    }

    /// The public key's bytes, as an attacker could feed them to HMAC.
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Pair::Ec(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// A JWT with the usual header (`alg` of the key, `kid`) and `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(
            &json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// A JWT with `header` as given, signed with this key whatever it says.
    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let message = message(header, claims);
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut signature)
                    .expect("RSA signature");
                signature
            }
            Pair::Ec(pair) => pair
                .sign(&rng, message.as_bytes())
                .expect("ECDSA signature")
                .as_ref()
                .to_vec(),
        };
        format!("{message}.{}", B64.encode(signature))
    }
}

/// `base64url(header).base64url(claims)`.
pub fn message(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(header).expect("JSON")),
        B64.encode(serde_json::to_vec(claims).expect("JSON"))
    )
}

/// An HMAC-SHA256 signature of `message` with `key`: the algorithm-confusion
/// forgery, with a public key as the secret.
pub fn hs256(message: &str, key: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    B64.encode(aws_lc_rs::hmac::sign(&key, message.as_bytes()).as_ref())
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Valid claims for `sub` (issuer, audience, five minutes to live), with
/// `extra` claims merged in (a `null` removes a claim).
pub fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub,
        "iat": now(), "exp": now() + 300});
    let map = claims.as_object_mut().expect("an object");
    for (name, value) in extra.as_object().expect("an object of claims") {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// A JWK set of `keys`, as JSON text.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

#[derive(Default)]
struct Served {
    body: Mutex<String>,
    /// Answer 500 instead of the set.
    failing: Mutex<bool>,
    fetches: AtomicUsize,
}

/// The provider's JWK set over HTTP, on a loopback port.
pub struct Idp {
    pub addr: SocketAddr,
    served: Arc<Served>,
}

impl Idp {
    pub async fn start(keys: &[&TestKey]) -> Idp {
        let served = Arc::new(Served::default());
        *served.body.lock().unwrap() = jwks(keys);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the provider");
        let addr = listener.local_addr().expect("an address");
        let router = Router::new()
            .route("/keys", axum::routing::get(keys_handler))
            .with_state(Arc::clone(&served));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Idp { addr, served }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    /// Publishes `keys` from now on.
    pub fn publish(&self, keys: &[&TestKey]) {
        *self.served.body.lock().unwrap() = jwks(keys);
    }

    /// Answers 500 (or the set again).
    pub fn fail(&self, failing: bool) {
        *self.served.failing.lock().unwrap() = failing;
    }

    /// How many times the set was asked for.
    pub fn fetches(&self) -> usize {
        self.served.fetches.load(Ordering::SeqCst)
    }
}

async fn keys_handler(State(served): State<Arc<Served>>) -> (StatusCode, String) {
    served.fetches.fetch_add(1, Ordering::SeqCst);
    if *served.failing.lock().unwrap() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned());
    }
    (StatusCode::OK, served.body.lock().unwrap().clone())
}

/// A `server.oidc` section for `jwks` (`jwks_url: ...` or `jwks_file: ...`)
/// and `grants` (YAML list items, each a line), indented under `server:`.
pub fn oidc_config(jwks: &str, extra: &str, grants: &[&str]) -> String {
    let mut yaml = format!(
        "  oidc:\n    issuer: {ISSUER}\n    audience: {AUDIENCE}\n    {jwks}\n{extra}    grants:\n"
    );
    for grant in grants {
        yaml.push_str(&format!("      - {grant}\n"));
    }
    yaml
}

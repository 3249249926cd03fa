//! Push webhooks: `POST /hooks/github`, `/hooks/gitlab`, `/hooks/gitea` and
//! `/hooks/generic` (DESIGN section 7, RELIABILITY rows 25-26).
//!
//! A webhook is only a hint to fetch now: the payload never carries desired
//! state, only the pushed ref is read from it, to skip pushes to other refs. A
//! request is size-capped and time-boxed while its body is read, its bytes
//! count against the server's [`BodyBudget`] until it is verified (503 past
//! the budget), it is verified in constant time against the raw body,
//! deduplicated by delivery id, and then
//! fires the reconcile loop's [`Trigger`](crate::reconcile::Trigger), which
//! coalesces bursts into one fetch. The response goes out at once; the fetch
//! runs after it.
//!
//! This module owns what canopy knows of each provider (one entry of
//! `Provider::ALL` each), the verification, the ref filter and the delivery-id
//! set; refusals are answered by [`ApiError`]. It must not touch the store or
//! the mirror.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::digest::CtOutput;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::budget::{BodyBudget, Held};
use super::error::{ApiError, Refused};
use super::{Shared, WebhookLabel};
use crate::config::{Secret, WebhooksConfig};

/// Delivery ids remembered per router (oldest forgotten first). Forges retry a
/// failed delivery within minutes, so a few thousand ids cover many retry
/// windows; each costs two 32-byte digests, whatever the id's length.
const DELIVERY_IDS: usize = 4096;

/// Longest prefix of a delivery id written to the log (ids are the sender's
/// text, even when the request turns out to be forged).
const LOGGED_ID_CHARS: usize = 80;

/// Every webhook route; the delivery-id set and the `budget` of unverified
/// body bytes are shared by all of them.
pub fn routes(budget: BodyBudget) -> Router<Shared> {
    let deliveries = Arc::new(Mutex::new(Deliveries::new(DELIVERY_IDS)));
    // A constant's borrow lives for the whole program: handlers keep theirs.
    let providers: &'static [Provider] = &Provider::ALL;
    providers.iter().fold(Router::new(), |router, provider| {
        let deliveries = deliveries.clone();
        let budget = budget.clone();
        router.route(
            &format!("/hooks/{}", provider.name),
            post(
                move |State(shared): State<Shared>, headers: HeaderMap, body: Body| {
                    let deliveries = deliveries.clone();
                    let held = budget.hold();
                    async move { receive(provider, shared, &deliveries, held, headers, body).await }
                },
            ),
        )
    })
}

/// Everything canopy knows about one sender of webhooks: adding a provider is
/// one entry in [`Provider::ALL`] (and its key in `WebhooksConfig`).
#[derive(Debug)]
struct Provider {
    /// The metric label, the log field and the path: `/hooks/<name>`.
    name: &'static str,
    /// Its secret, `None` when not configured.
    secret: fn(&WebhooksConfig) -> Option<&Secret>,
    /// The headers naming a delivery, first match wins.
    delivery_headers: &'static [&'static str],
    /// How a request proves it knows the secret.
    signature: Signature,
    /// What the request announces; `None`: every request is a push.
    events: Option<Events>,
    /// Whether a push may leave out the ref (no body, or no `ref`): "fetch
    /// whatever is tracked".
    ref_optional: bool,
}

/// The header that carries the proof, and the scheme that checks it.
#[derive(Debug)]
struct Signature {
    header: &'static str,
    check: Check,
    /// GitHub's legacy SHA-1 signature header: sent without `header`, it is
    /// refused as such ([`Unauthorized::Sha1Only`]), not as a missing header.
    sha1_header: Option<&'static str>,
}

/// One verification scheme: checks the value of header `name` against the
/// secret and the raw body, in constant time.
type Check =
    fn(name: &'static str, value: &str, secret: &[u8], body: &[u8]) -> Result<(), Unauthorized>;

/// The event header, and which of its values mean a push or a ping.
#[derive(Debug)]
struct Events {
    header: &'static str,
    push: &'static [&'static str],
    ping: &'static [&'static str],
}

impl Provider {
    const GITHUB: Provider = Provider {
        name: "github",
        secret: |config| config.github.as_ref(),
        delivery_headers: &["x-github-delivery"],
        signature: Signature {
            header: "X-Hub-Signature-256",
            check: hmac_prefixed,
            sha1_header: Some("x-hub-signature"),
        },
        events: Some(Events {
            header: "X-GitHub-Event",
            push: &["push"],
            ping: &["ping"],
        }),
        ref_optional: false,
    };

    const GITLAB: Provider = Provider {
        name: "gitlab",
        secret: |config| config.gitlab.as_ref(),
        // `X-Gitlab-Event-UUID` (per event) and, since 16.x, `X-Gitlab-Webhook-UUID`.
        delivery_headers: &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"],
        signature: Signature {
            header: "X-Gitlab-Token",
            check: token,
            sha1_header: None,
        },
        events: Some(Events {
            header: "X-Gitlab-Event",
            push: &["Push Hook", "Tag Push Hook"],
            ping: &[],
        }),
        ref_optional: false,
    };

    const GITEA: Provider = Provider {
        name: "gitea",
        secret: |config| config.gitea.as_ref(),
        delivery_headers: &["x-gitea-delivery"],
        signature: Signature {
            header: "X-Gitea-Signature",
            check: hmac_hex,
            sha1_header: None,
        },
        events: Some(Events {
            header: "X-Gitea-Event",
            push: &["push"],
            ping: &[],
        }),
        ref_optional: false,
    };

    /// canopy's own: one meaning (something was pushed), the ref optional.
    const GENERIC: Provider = Provider {
        name: "generic",
        secret: |config| config.generic.as_ref(),
        delivery_headers: &["x-canopy-delivery"],
        signature: Signature {
            header: "X-Canopy-Signature",
            check: hmac_prefixed,
            sha1_header: None,
        },
        events: None,
        ref_optional: true,
    };

    const ALL: [Provider; 4] = [
        Provider::GITHUB,
        Provider::GITLAB,
        Provider::GITEA,
        Provider::GENERIC,
    ];
}

/// How a request ended: its answer and its metric label.
#[derive(Debug, PartialEq, Eq)]
enum Disposition {
    Refused(Refused),
    Ping,
    Ignored(String),
    Duplicate,
    Triggered,
}

impl Disposition {
    /// The `result` label of `canopy_webhook_requests`.
    fn result(&self) -> &'static str {
        match self {
            Disposition::Refused(Refused::NotConfigured { .. }) => "not_configured",
            Disposition::Refused(Refused::TooLarge { .. }) => "too_large",
            Disposition::Refused(Refused::Timeout { .. }) => "timeout",
            Disposition::Refused(Refused::Busy) => "busy",
            Disposition::Refused(Refused::BadRequest(_)) => "bad_request",
            Disposition::Refused(Refused::Unauthorized(_)) => "unauthorized",
            Disposition::Ping => "ping",
            Disposition::Ignored(_) => "ignored",
            Disposition::Duplicate => "duplicate",
            Disposition::Triggered => "triggered",
        }
    }
}

impl IntoResponse for Disposition {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Disposition::Refused(refused) => return ApiError::Webhook(refused).into_response(),
            Disposition::Ping => (StatusCode::OK, json!({"status": "pong"})),
            Disposition::Ignored(reason) => (
                StatusCode::ACCEPTED,
                json!({"status": "ignored", "reason": reason}),
            ),
            Disposition::Duplicate => (StatusCode::OK, json!({"status": "duplicate"})),
            Disposition::Triggered => (StatusCode::ACCEPTED, json!({"status": "fetch requested"})),
        };
        (status, axum::Json(body)).into_response()
    }
}

/// Why a request failed verification. The messages name headers only: never
/// the secret, the expected signature or the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Unauthorized {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("missing X-Hub-Signature-256 header; the SHA-1 X-Hub-Signature alone is not accepted")]
    Sha1Only,
    #[error("{header} is not {form}")]
    Malformed {
        header: &'static str,
        form: &'static str,
    },
    #[error("{0} does not match")]
    Mismatch(&'static str),
}

/// What the forge says happened.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Push,
    Ping,
    Other(String),
}

async fn receive(
    provider: &'static Provider,
    shared: Shared,
    deliveries: &Mutex<Deliveries>,
    held: Held,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let delivery = delivery_id(provider, &headers);
    let logged_id = delivery.map(|id| &id[..id.len().min(LOGGED_ID_CHARS)]);
    let span = tracing::info_span!("webhook", provider = provider.name, delivery = logged_id);
    let outcome = handle(
        provider, &shared, deliveries, held, &headers, delivery, body,
    )
    .instrument(span.clone())
    .await;
    let _webhook = span.enter();
    if outcome == Disposition::Triggered {
        shared.trigger.fire();
    }
    let result = outcome.result();
    shared
        .metrics
        .webhooks
        .get_or_create(&WebhookLabel {
            provider: provider.name,
            result,
        })
        .inc();
    match &outcome {
        // Fixed texts naming a header: safe to log, and what an operator needs to
        // fix a secret that differs between canopy and the forge.
        Disposition::Refused(Refused::Unauthorized(reason)) => {
            tracing::info!(result, reason = %reason, "webhook refused")
        }
        _ => tracing::info!(result, "webhook received"),
    }
    outcome.into_response()
}

async fn handle(
    provider: &Provider,
    shared: &Shared,
    deliveries: &Mutex<Deliveries>,
    mut held: Held,
    headers: &HeaderMap,
    delivery: Option<&str>,
    body: Body,
) -> Disposition {
    let settings = &shared.settings;
    let Some(secret) = (provider.secret)(&settings.webhooks) else {
        return Disposition::Refused(Refused::NotConfigured {
            provider: provider.name,
        });
    };
    let limits = BodyLimits {
        max: settings.webhooks.max_body,
        timeout: settings.server.body_timeout,
    };
    // `held` keeps the body's bytes counted until it is dropped with `body`,
    // at the end of this function.
    let body = match read_body(body, headers, limits, &mut held).await {
        Ok(body) => body,
        Err(refused) => return Disposition::Refused(refused),
    };
    if let Err(reason) = verify(provider, secret.expose().as_bytes(), headers, &body) {
        return Disposition::Refused(Refused::Unauthorized(reason));
    }
    let event = match event(provider, headers) {
        Ok(event) => event,
        Err(reason) => return Disposition::Refused(Refused::BadRequest(reason)),
    };
    match event {
        Event::Ping => Disposition::Ping,
        Event::Other(name) => Disposition::Ignored(format!("event {name} is not a push")),
        Event::Push => match pushed_ref(provider, &body) {
            Err(reason) => Disposition::Refused(Refused::BadRequest(reason)),
            Ok(Some(pushed)) if !tracks(&settings.reference, &pushed) => {
                Disposition::Ignored(format!("push to {pushed}, tracking {}", settings.reference))
            }
            // Only verified deliveries that would fetch enter the set: a forger
            // cannot poison ids, and a retried ping or ignored push gets the same
            // answer again.
            Ok(_) => match delivery {
                Some(id) if !lock(deliveries).first_time(provider, id) => Disposition::Duplicate,
                _ => Disposition::Triggered,
            },
        },
    }
}

fn lock(deliveries: &Mutex<Deliveries>) -> std::sync::MutexGuard<'_, Deliveries> {
    // Only hashing and set operations run under the lock. Were one to panic, the
    // set could at worst keep or lose one id: one missed dedup, or one extra
    // fetch. Neither is worth refusing every later webhook for.
    deliveries.lock().unwrap_or_else(|p| p.into_inner())
}

fn delivery_id<'h>(provider: &Provider, headers: &'h HeaderMap) -> Option<&'h str> {
    provider
        .delivery_headers
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty())
}

/// How much of a body is read, and for how long.
#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    /// `webhooks.max_body`.
    max: u64,
    /// `server.body_timeout`.
    timeout: Duration,
}

/// Reads at most `limits.max` bytes of body within `limits.timeout`, every
/// byte counted in `held` before it is read. A declared `Content-Length` over
/// the cap is refused before reading anything, and one the budget cannot
/// hold too (503): it is taken from the budget whole, up front.
async fn read_body(
    mut body: Body,
    headers: &HeaderMap,
    limits: BodyLimits,
    held: &mut Held,
) -> Result<Vec<u8>, Refused> {
    let BodyLimits { max, timeout } = limits;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max) {
        return Err(Refused::TooLarge { max });
    }
    let declared = declared.unwrap_or(0);
    if !held.grow_to(declared) {
        return Err(Refused::Busy);
    }
    let read = async {
        // Within the cap and the budget: the declared size is allocated once.
        let mut bytes = Vec::with_capacity(declared as usize);
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame
                .map_err(|_| Refused::BadRequest("request body could not be read".to_owned()))?;
            if let Ok(data) = frame.into_data() {
                let total = (bytes.len() + data.len()) as u64;
                if total > max {
                    return Err(Refused::TooLarge { max });
                }
                // A chunked body is counted as it comes.
                if !held.grow_to(total) {
                    return Err(Refused::Busy);
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(Refused::Timeout { after: timeout }))
}

/// Checks the request's signature (or token) against `secret`, in constant
/// time, as the provider's [`Signature`] says.
fn verify(
    provider: &Provider,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Unauthorized> {
    let signature = &provider.signature;
    let name = signature.header;
    match header_text(headers, name)? {
        Some(value) => (signature.check)(name, value, secret, body),
        None if signature
            .sha1_header
            .is_some_and(|sha1| headers.contains_key(sha1)) =>
        {
            Err(Unauthorized::Sha1Only)
        }
        None => Err(Unauthorized::Missing(name)),
    }
}

/// The header's text, `None` when absent; a value that is not visible ASCII is
/// malformed (no valid signature or token has other bytes).
fn header_text<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, Unauthorized> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| Unauthorized::Malformed {
                header: name,
                form: "visible ASCII",
            })
        })
        .transpose()
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body) (GitHub, generic).
fn hmac_prefixed(
    name: &'static str,
    value: &str,
    secret: &[u8],
    body: &[u8],
) -> Result<(), Unauthorized> {
    let tag = value
        .strip_prefix("sha256=")
        .and_then(decode_sha256_hex)
        .ok_or(Unauthorized::Malformed {
            header: name,
            form: "sha256=<64 hex digits>",
        })?;
    verify_hmac(secret, body, &tag).map_err(|()| Unauthorized::Mismatch(name))
}

/// `<hex>` of HMAC-SHA256(secret, body), no prefix (Gitea).
fn hmac_hex(
    name: &'static str,
    value: &str,
    secret: &[u8],
    body: &[u8],
) -> Result<(), Unauthorized> {
    let tag = decode_sha256_hex(value).ok_or(Unauthorized::Malformed {
        header: name,
        form: "64 hex digits",
    })?;
    verify_hmac(secret, body, &tag).map_err(|()| Unauthorized::Mismatch(name))
}

/// The secret itself as the header's value (GitLab).
fn token(name: &'static str, value: &str, secret: &[u8], _body: &[u8]) -> Result<(), Unauthorized> {
    if token_matches(secret, value.as_bytes()) {
        Ok(())
    } else {
        Err(Unauthorized::Mismatch(name))
    }
}

fn decode_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let mut tag = [0; 32];
    hex::decode_to_slice(text, &mut tag).ok()?;
    Some(tag)
}

/// HMAC-SHA256(secret, body) == tag, compared in constant time by `hmac`.
fn verify_hmac(secret: &[u8], body: &[u8], tag: &[u8; 32]) -> Result<(), ()> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| ())
}

/// Compares digests rather than the texts, so the comparison takes the same
/// time whatever the token's length and wherever it first differs.
fn token_matches(secret: &[u8], token: &[u8]) -> bool {
    CtOutput::<Sha256>::new(Sha256::digest(token)) == CtOutput::new(Sha256::digest(secret))
}

/// What the (verified) request announces; a missing event header is a bad
/// request, since every forge sends one.
fn event(provider: &Provider, headers: &HeaderMap) -> Result<Event, String> {
    let Some(events) = &provider.events else {
        return Ok(Event::Push);
    };
    let name = events.header;
    let value = headers
        .get(name)
        .ok_or_else(|| format!("missing {name} header"))?
        .to_str()
        .map_err(|_| format!("{name} is not visible ASCII"))?;
    Ok(if events.push.contains(&value) {
        Event::Push
    } else if events.ping.contains(&value) {
        Event::Ping
    } else {
        Event::Other(value.to_owned())
    })
}

/// The ref that a push payload of `provider` (`github`, `gitlab`, `gitea`,
/// `generic`) names, as the hook reads it once its signature is verified:
/// `Ok(None)` when a generic push leaves it out. Public for the fuzzer.
pub fn push_payload_ref(provider: &str, body: &[u8]) -> Result<Option<String>, String> {
    let provider = Provider::ALL
        .iter()
        .find(|p| p.name == provider)
        .ok_or_else(|| format!("unknown webhook provider {provider:?}"))?;
    pushed_ref(provider, body)
}

/// The full ref a push payload names (`refs/heads/main`). The forges always
/// send one; the generic hook may send no body or omit `ref` to mean "fetch
/// whatever is tracked" (`Ok(None)`).
fn pushed_ref(provider: &Provider, body: &[u8]) -> Result<Option<String>, String> {
    if provider.ref_optional && body.trim_ascii().is_empty() {
        return Ok(None);
    }
    // The error's position, never its text: serde's messages quote the input.
    let payload: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "payload is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let Value::Object(mut payload) = payload else {
        return Err("payload is not a JSON object".to_owned());
    };
    match payload.remove("ref") {
        Some(Value::String(pushed)) => Ok(Some(pushed)),
        None if provider.ref_optional => Ok(None),
        None => Err("push payload has no ref".to_owned()),
        Some(_) => Err("ref in the payload is not a string".to_owned()),
    }
}

/// Whether a push to `pushed` (a full ref name) can move the tracked
/// `reference`, as configured: a short name is a branch or a tag (the mirror
/// fetches both), a `refs/...` name matches exactly.
fn tracks(reference: &str, pushed: &str) -> bool {
    // `HEAD` follows the remote's default branch, which a hook does not name;
    // a pinned commit cannot move, but a push may make it reachable. Either
    // way one extra fetch is cheap and a missed one is not, so any push counts.
    if reference == "HEAD" || crate::protocol::is_commit_id(reference) {
        return true;
    }
    if reference.starts_with("refs/") {
        return pushed == reference;
    }
    [
        pushed.strip_prefix("refs/heads/"),
        pushed.strip_prefix("refs/tags/"),
    ]
    .contains(&Some(reference))
}

/// A bounded set of delivery ids, oldest evicted first. Ids are kept as
/// digests of (provider, id), so memory is fixed whatever the ids' length.
struct Deliveries {
    order: VecDeque<[u8; 32]>,
    seen: HashSet<[u8; 32]>,
    capacity: usize,
}

impl Deliveries {
    fn new(capacity: usize) -> Deliveries {
        Deliveries {
            order: VecDeque::with_capacity(capacity),
            seen: HashSet::with_capacity(capacity),
            capacity,
        }
    }

    /// Records the delivery; false when it was already recorded.
    fn first_time(&mut self, provider: &Provider, id: &str) -> bool {
        let key: [u8; 32] = Sha256::new()
            .chain_update(provider.name)
            .chain_update([0])
            .chain_update(id)
            .finalize()
            .into();
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// GitHub's documented example ("Validating webhook deliveries"), checked
    /// with `printf '%s' 'Hello, World!' | openssl dgst -sha256 -hmac "$SECRET"`.
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn github_signature_is_hmac_sha256_of_the_raw_body() {
        let sig = format!("sha256={SIGNATURE}");
        let ok = headers(&[("x-hub-signature-256", &sig)]);
        assert_eq!(verify(&Provider::GITHUB, SECRET, &ok, BODY), Ok(()));
        assert_eq!(
            verify(&Provider::GITHUB, SECRET, &ok, b"Hello, World?"),
            Err(Unauthorized::Mismatch("X-Hub-Signature-256"))
        );
        assert_eq!(
            verify(&Provider::GITHUB, b"another secret", &ok, BODY),
            Err(Unauthorized::Mismatch("X-Hub-Signature-256"))
        );
        let upper = format!("sha256={}", SIGNATURE.to_uppercase());
        let upper = headers(&[("x-hub-signature-256", &upper)]);
        assert_eq!(verify(&Provider::GITHUB, SECRET, &upper, BODY), Ok(()));
    }

    #[test]
    fn github_refuses_missing_sha1_only_and_malformed_signatures() {
        assert_eq!(
            verify(&Provider::GITHUB, SECRET, &HeaderMap::new(), BODY),
            Err(Unauthorized::Missing("X-Hub-Signature-256"))
        );
        let sha1 = headers(&[("x-hub-signature", "sha1=0123")]);
        assert_eq!(
            verify(&Provider::GITHUB, SECRET, &sha1, BODY),
            Err(Unauthorized::Sha1Only)
        );
        let malformed = Unauthorized::Malformed {
            header: "X-Hub-Signature-256",
            form: "sha256=<64 hex digits>",
        };
        for bad in [
            SIGNATURE.to_owned(),                     // no prefix
            format!("sha1={SIGNATURE}"),              // other algorithm
            format!("sha256={}", &SIGNATURE[..62]),   // short
            format!("sha256={SIGNATURE}00"),          // long
            format!("sha256={}zz", &SIGNATURE[..62]), // not hex
            format!("sha256= {SIGNATURE}"),           // stray space
            "sha256=".to_owned(),
        ] {
            let h = headers(&[("x-hub-signature-256", &bad)]);
            assert_eq!(
                verify(&Provider::GITHUB, SECRET, &h, BODY),
                Err(malformed.clone()),
                "{bad}"
            );
        }
    }

    #[test]
    fn gitea_and_generic_use_their_own_headers() {
        let gitea = headers(&[("x-gitea-signature", SIGNATURE)]);
        assert_eq!(verify(&Provider::GITEA, SECRET, &gitea, BODY), Ok(()));
        let prefixed = format!("sha256={SIGNATURE}");
        let gitea_prefixed = headers(&[("x-gitea-signature", &prefixed)]);
        assert!(matches!(
            verify(&Provider::GITEA, SECRET, &gitea_prefixed, BODY),
            Err(Unauthorized::Malformed { .. })
        ));
        let generic = headers(&[("x-canopy-signature", &prefixed)]);
        assert_eq!(verify(&Provider::GENERIC, SECRET, &generic, BODY), Ok(()));
        // A GitHub header does not sign a generic hook.
        let github = headers(&[("x-hub-signature-256", &prefixed)]);
        assert_eq!(
            verify(&Provider::GENERIC, SECRET, &github, BODY),
            Err(Unauthorized::Missing("X-Canopy-Signature"))
        );
    }

    #[test]
    fn gitlab_token_must_equal_the_secret() {
        let ok = headers(&[("x-gitlab-token", "It's a Secret to Everybody")]);
        assert_eq!(verify(&Provider::GITLAB, SECRET, &ok, BODY), Ok(()));
        for wrong in [
            "It's a Secret to Everybod",
            "It's a Secret to Everybody ",
            "",
        ] {
            let h = headers(&[("x-gitlab-token", wrong)]);
            assert_eq!(
                verify(&Provider::GITLAB, SECRET, &h, BODY),
                Err(Unauthorized::Mismatch("X-Gitlab-Token")),
                "{wrong:?}"
            );
        }
        assert_eq!(
            verify(&Provider::GITLAB, SECRET, &HeaderMap::new(), BODY),
            Err(Unauthorized::Missing("X-Gitlab-Token"))
        );
    }

    #[test]
    fn refusals_never_quote_the_secret_or_the_expected_signature() {
        let wrong = headers(&[("x-hub-signature-256", &format!("sha256={}", "0".repeat(64)))]);
        let err = verify(&Provider::GITHUB, SECRET, &wrong, BODY).unwrap_err();
        let text = err.to_string();
        assert_eq!(text, "X-Hub-Signature-256 does not match");
        assert!(!text.contains(SIGNATURE));
    }

    #[test]
    fn ref_matching() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        for (reference, pushed, expected) in [
            ("main", "refs/heads/main", true),
            ("main", "refs/tags/main", true),
            ("main", "refs/heads/other", false),
            ("main", "refs/heads/main2", false),
            ("main", "refs/heads/feature/main", false),
            ("main", "main", false),
            ("release/1", "refs/heads/release/1", true),
            ("v1.2", "refs/tags/v1.2", true),
            ("refs/heads/main", "refs/heads/main", true),
            ("refs/heads/main", "refs/tags/main", false),
            ("refs/tags/v1", "refs/tags/v1", true),
            ("refs/tags/v1", "refs/heads/v1", false),
            ("HEAD", "refs/heads/anything", true),
            (sha, "refs/heads/anything", true),
            // 39 hex digits is a name, not a commit.
            (&sha[..39], "refs/heads/anything", false),
        ] {
            assert_eq!(
                tracks(reference, pushed),
                expected,
                "{reference} <- {pushed}"
            );
        }
    }

    #[test]
    fn events_by_provider() {
        let github = |name| event(&Provider::GITHUB, &headers(&[("x-github-event", name)]));
        assert_eq!(github("push"), Ok(Event::Push));
        assert_eq!(github("ping"), Ok(Event::Ping));
        assert_eq!(github("issues"), Ok(Event::Other("issues".into())));
        let gitlab = |name| event(&Provider::GITLAB, &headers(&[("x-gitlab-event", name)]));
        assert_eq!(gitlab("Push Hook"), Ok(Event::Push));
        assert_eq!(gitlab("Tag Push Hook"), Ok(Event::Push));
        assert_eq!(
            gitlab("Merge Request Hook"),
            Ok(Event::Other("Merge Request Hook".into()))
        );
        let gitea = |name| event(&Provider::GITEA, &headers(&[("x-gitea-event", name)]));
        assert_eq!(gitea("push"), Ok(Event::Push));
        assert_eq!(gitea("create"), Ok(Event::Other("create".into())));
        assert_eq!(
            event(&Provider::GENERIC, &HeaderMap::new()),
            Ok(Event::Push)
        );
        assert_eq!(
            event(&Provider::GITHUB, &HeaderMap::new()),
            Err("missing X-GitHub-Event header".to_owned())
        );
    }

    #[test]
    fn pushed_ref_from_payloads() {
        let main = Ok(Some("refs/heads/main".to_owned()));
        let payload = br#"{"ref":"refs/heads/main","commits":[{"id":"x"}]}"#;
        assert_eq!(pushed_ref(&Provider::GITHUB, payload), main);
        assert_eq!(pushed_ref(&Provider::GENERIC, payload), main);
        assert_eq!(pushed_ref(&Provider::GENERIC, b""), Ok(None));
        assert_eq!(pushed_ref(&Provider::GENERIC, b" \n"), Ok(None));
        assert_eq!(pushed_ref(&Provider::GENERIC, b"{}"), Ok(None));
        assert_eq!(
            pushed_ref(&Provider::GITHUB, b"{}"),
            Err("push payload has no ref".to_owned())
        );
        assert_eq!(
            pushed_ref(&Provider::GITLAB, br#"{"ref": 7}"#),
            Err("ref in the payload is not a string".to_owned())
        );
        assert_eq!(
            pushed_ref(&Provider::GITEA, br#"["refs/heads/main"]"#),
            Err("payload is not a JSON object".to_owned())
        );
        // The message gives a position, never the payload's text.
        let err = pushed_ref(&Provider::GITHUB, b"{\"ref\": s3cret-looking}").unwrap_err();
        assert_eq!(err, "payload is not valid JSON (line 1, column 9)");
    }

    #[test]
    fn deliveries_are_remembered_up_to_capacity_oldest_first() {
        let mut seen = Deliveries::new(3);
        assert!(seen.first_time(&Provider::GITHUB, "a"));
        assert!(!seen.first_time(&Provider::GITHUB, "a"));
        // Providers have separate id spaces.
        assert!(seen.first_time(&Provider::GITEA, "a"));
        assert!(seen.first_time(&Provider::GITHUB, "b"));
        assert!(seen.first_time(&Provider::GITHUB, "c")); // evicts github/a
        assert_eq!((seen.order.len(), seen.seen.len()), (3, 3));
        assert!(seen.first_time(&Provider::GITHUB, "a"));
        assert!(!seen.first_time(&Provider::GITHUB, "c"));
        // A flood of new ids keeps the set at its bound.
        for i in 0..10_000 {
            assert!(seen.first_time(&Provider::GENERIC, &i.to_string()));
        }
        assert_eq!((seen.order.len(), seen.seen.len()), (3, 3));
    }
}

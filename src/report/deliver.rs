//! Posting a report to its sinks: one HTTP client per address policy, bounded
//! timeouts, retries with exponential backoff on what may pass (connection
//! errors, timeouts, 429, 5xx), never on what will not (other 4xx, a refused
//! address, a redirect). Redirects are not followed and no proxy is used: either
//! would connect somewhere other than the address [`super::guard`] checked.
//!
//! Never logged or stored: the sink URL beyond its origin (a Slack webhook's path
//! is its secret, see [`SinkUrl`](crate::config::SinkUrl)) and the signing secret.

use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use sha2::Sha256;

use super::guard::{self, GuardedResolver};
use super::model::{Report, rfc3339};
use super::render;
use crate::config::{SinkConfig, SinkFormat};

/// The signature header of a sink with a secret: `sha256=<hex HMAC-SHA256 of the
/// exact body>`, as GitHub signs its webhooks.
pub const SIGNATURE_HEADER: &str = "X-Canopy-Signature";
/// The slot the body reports on, so a receiver can drop a duplicate.
pub const SLOT_HEADER: &str = "X-Canopy-Slot";

/// Timeouts and retries of deliveries; the defaults are documented in
/// docs/reports.md.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    pub connect_timeout: Duration,
    /// Of one attempt, from connecting to the end of the answer.
    pub timeout: Duration,
    /// Attempts per sink and slot, the first included.
    pub attempts: u32,
    /// Before the second attempt; doubled before each next one.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            attempts: 3,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What became of one sink's delivery: stored in
/// `canopy:<ns>:report:<name>:deliveries` and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryOutcome {
    /// The sink's origin only (`https://hooks.slack.com/...`).
    pub sink: String,
    pub format: &'static str,
    pub slot: String,
    pub ok: bool,
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When the last attempt ended (RFC 3339).
    pub at: String,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to build the HTTP client for report sinks")]
pub struct HttpClientError(#[source] reqwest::Error);

/// Posts reports. Cheap to share (`Arc`): the clients pool connections.
#[derive(Debug, Clone)]
pub struct Deliverer {
    /// Resolves through [`GuardedResolver`]: public addresses only.
    guarded: reqwest::Client,
    /// For reports with `allow_private_targets: true`.
    open: reqwest::Client,
    options: DeliveryOptions,
}

impl Deliverer {
    pub fn new(options: DeliveryOptions) -> Result<Deliverer, HttpClientError> {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(options.connect_timeout)
                .timeout(options.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("canopy/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Deliverer {
            guarded: builder()
                .dns_resolver(GuardedResolver)
                .build()
                .map_err(HttpClientError)?,
            open: builder().build().map_err(HttpClientError)?,
            options,
        })
    }

    /// Delivers `report` to `sink`, retrying as the options say. Never fails: the
    /// outcome says what happened, and it is logged here.
    pub async fn deliver(
        &self,
        sink: &SinkConfig,
        report: &Report,
        allow_private: bool,
    ) -> DeliveryOutcome {
        let (body, content_type) = body(sink.format, report);
        let signature = sink
            .secret
            .as_ref()
            .map(|secret| signature(secret.expose().as_bytes(), body.as_bytes()));
        let mut outcome = DeliveryOutcome {
            sink: sink.url.to_string(),
            format: format_name(sink.format),
            slot: report.slot.clone(),
            ok: false,
            attempts: 0,
            status: None,
            error: None,
            at: String::new(),
        };
        loop {
            outcome.attempts += 1;
            let attempt = self
                .attempt(
                    sink,
                    allow_private,
                    &body,
                    content_type,
                    signature.as_deref(),
                    &report.slot,
                )
                .await;
            outcome.at = rfc3339(Utc::now());
            let retry = match attempt {
                Ok(()) => {
                    outcome.ok = true;
                    outcome.error = None;
                    break;
                }
                Err(Failure {
                    status,
                    message,
                    retry,
                }) => {
                    outcome.status = status.map(|s| s.as_u16());
                    outcome.error = Some(message);
                    retry
                }
            };
            if !retry || outcome.attempts >= self.options.attempts {
                break;
            }
            tracing::debug!(
                report = %report.name, sink = %outcome.sink, attempt = outcome.attempts,
                error = outcome.error.as_deref().unwrap_or_default(), "report delivery failed; retrying"
            );
            let delay = crate::backoff::exponential(
                self.options.backoff,
                outcome.attempts,
                self.options.max_backoff,
            );
            tokio::time::sleep(delay).await;
        }
        if outcome.ok {
            tracing::info!(report = %report.name, slot = %report.slot, sink = %outcome.sink, attempts = outcome.attempts, "report delivered");
        } else {
            tracing::warn!(
                report = %report.name, slot = %report.slot, sink = %outcome.sink, attempts = outcome.attempts,
                error = outcome.error.as_deref().unwrap_or_default(), "report delivery failed"
            );
        }
        outcome
    }

    async fn attempt(
        &self,
        sink: &SinkConfig,
        allow_private: bool,
        body: &str,
        content_type: &'static str,
        signature: Option<&str>,
        slot: &str,
    ) -> Result<(), Failure> {
        let refused = |message: String| Failure {
            status: None,
            message,
            retry: false,
        };
        let url = reqwest::Url::parse(sink.url.expose())
            .map_err(|e| refused(format!("sink {}: invalid URL: {e}", sink.url)))?;
        let client = if allow_private {
            &self.open
        } else {
            guard::check_literal(&url).map_err(|e| refused(format!("sink {}: {e}", sink.url)))?;
            &self.guarded
        };
        let mut request = client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(SLOT_HEADER, slot)
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let response = request.send().await.map_err(|e| {
            let retry = !chain_has::<guard::Refused>(&e) && !e.is_builder();
            Failure {
                status: None,
                // Without the URL: reqwest's message would print its secret path.
                message: format!(
                    "sink {}: {}",
                    sink.url,
                    crate::error_chain(&e.without_url())
                ),
                retry,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        let message = if status.is_redirection() {
            format!(
                "sink {} answered {status}: redirects are not followed",
                sink.url
            )
        } else {
            format!("sink {} answered {status}", sink.url)
        };
        Err(Failure {
            status: Some(status),
            message,
            retry,
        })
    }
}

struct Failure {
    status: Option<StatusCode>,
    message: String,
    retry: bool,
}

fn chain_has<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The body of a sink's format and its content type.
pub fn body(format: SinkFormat, report: &Report) -> (String, &'static str) {
    match format {
        SinkFormat::Json => (render::json(report), "application/json"),
        SinkFormat::Slack => (render::slack(report).to_string(), "application/json"),
        SinkFormat::Markdown => (render::markdown(report), "text/markdown; charset=utf-8"),
    }
}

fn format_name(format: SinkFormat) -> &'static str {
    match format {
        SinkFormat::Json => "json",
        SinkFormat::Slack => "slack",
        SinkFormat::Markdown => "markdown",
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

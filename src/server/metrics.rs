//! The daemon's Prometheus metrics (`/metrics`, text exposition format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `sync`, `config`, `prune` or `drift`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    /// `github`, `gitlab`, `gitea` or `generic`.
    pub provider: &'static str,
    /// `triggered`, `ignored`, `duplicate`, `ping`, `unauthorized`, `too_large`,
    /// `timeout`, `busy`, `bad_request`, `not_configured`.
    pub result: &'static str,
}

/// Every metric canopy exports; cheap to clone (the metrics are shared handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Cycles (poll + reconcile), by result.
    pub cycles: Family<ResultLabel, Counter>,
    /// Seconds per cycle.
    pub cycle_seconds: Histogram,
    /// Consecutive failed cycles (0 when the last one succeeded).
    pub consecutive_failures: Gauge,
    /// Signals published, by kind.
    pub signals: Family<KindLabel, Counter>,
    /// Apps per status, as last evaluated.
    pub apps: Family<StatusLabel, Gauge>,
    /// Webhook requests, by provider and outcome.
    pub webhooks: Family<WebhookLabel, Counter>,
    /// HTTP connections open now (at most `server.max_connections`).
    pub connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            cycles: Family::default(),
            cycle_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            consecutive_failures: Gauge::default(),
            signals: Family::default(),
            apps: Family::default(),
            webhooks: Family::default(),
            connections: Gauge::default(),
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("canopy");
        registry.register(
            "cycles",
            "Poll-and-reconcile cycles, by result",
            self.cycles.clone(),
        );
        registry.register(
            "cycle_seconds",
            "Duration of a poll-and-reconcile cycle",
            self.cycle_seconds.clone(),
        );
        registry.register(
            "consecutive_failures",
            "Failed cycles since the last success",
            self.consecutive_failures.clone(),
        );
        registry.register(
            "signals",
            "Signals published, by kind",
            self.signals.clone(),
        );
        registry.register(
            "apps",
            "Apps per status, as last evaluated",
            self.apps.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook requests, by provider and outcome",
            self.webhooks.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections open now",
            self.connections.clone(),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

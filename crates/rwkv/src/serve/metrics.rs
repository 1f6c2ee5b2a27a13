//! Prometheus metrics of the server (`GET /metrics`, OpenMetrics text).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric the server keeps; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// Requests accepted and waiting for a state slot.
    pub queue_depth: Gauge,
    /// Sequences holding a state slot (prefilling or decoding).
    pub running: Gauge,
    pub generated_tokens: Counter,
    pub prompt_tokens: Counter,
    /// Prompt tokens not fed because a cached state already covered them.
    pub cached_prompt_tokens: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub requests_finished: Counter,
    pub requests_cancelled: Counter,
    pub requests_failed: Counter,
    /// 503 answers: the queue was full.
    pub requests_rejected: Counter,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rwkv");
        let m = Metrics {
            registry: Registry::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            generated_tokens: Counter::default(),
            prompt_tokens: Counter::default(),
            cached_prompt_tokens: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            requests_finished: Counter::default(),
            requests_cancelled: Counter::default(),
            requests_failed: Counter::default(),
            requests_rejected: Counter::default(),
            // 1 ms .. 65 s: a CPU prefill of a long prompt is slow, a GPU decode step is fast.
            time_to_first_token: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            inter_token_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 17)),
        };
        let r = &mut registry;
        r.register(
            "queue_depth",
            "requests accepted and waiting for a slot",
            m.queue_depth.clone(),
        );
        r.register(
            "running_sequences",
            "sequences holding a state slot",
            m.running.clone(),
        );
        r.register(
            "generated_tokens",
            "tokens generated",
            m.generated_tokens.clone(),
        );
        r.register(
            "prompt_tokens",
            "prompt tokens of finished or running requests",
            m.prompt_tokens.clone(),
        );
        r.register(
            "cached_prompt_tokens",
            "prompt tokens covered by a cached state (not fed)",
            m.cached_prompt_tokens.clone(),
        );
        r.register(
            "state_cache_hits",
            "requests that started from a cached state",
            m.cache_hits.clone(),
        );
        r.register(
            "state_cache_misses",
            "requests that found no cached state",
            m.cache_misses.clone(),
        );
        r.register(
            "requests_finished",
            "requests that ran to the end",
            m.requests_finished.clone(),
        );
        r.register(
            "requests_cancelled",
            "requests whose client went away",
            m.requests_cancelled.clone(),
        );
        r.register(
            "requests_failed",
            "requests failed by a backend error",
            m.requests_failed.clone(),
        );
        r.register(
            "requests_rejected",
            "requests refused with 503 because the queue was full",
            m.requests_rejected.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "from acceptance to the first generated token",
            m.time_to_first_token.clone(),
        );
        r.register(
            "inter_token_latency_seconds",
            "between consecutive generated tokens of one request",
            m.inter_token_latency.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

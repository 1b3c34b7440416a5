//! The router's Prometheus metrics, with per-cell handles resolved once so the hot
//! path never looks up a label.

use http::{Method, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OTHER"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Latency buckets in seconds, from 100 µs to 10 s.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The `cell` label of requests the router answered without a cell.
pub const NO_CELL: &str = "none";

/// Why a request was sent a second time.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// To the shard's other holder: the first could not be reached.
    ConnectFailed,
    /// To the shard's new holder: the first no longer serves it (421).
    Misdirected,
    /// To the same cell: it refused the stream before starting it.
    Refused,
}

/// Upstream failures, by kind.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamError {
    Connect,
    Failed,
    Timeout,
    Refused,
    /// Every stream to the cell stayed busy until the deadline; not sent.
    Saturated,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    /// Requests sent a second time, by [`Retry`].
    retries: [IntCounter; 3],
    pub in_flight: IntGauge,
    pub auth: AuthMetrics,
}

/// One cell's metric handles.
#[derive(Debug, Clone)]
pub struct CellMetrics {
    requests: Vec<[IntCounter; CLASSES.len()]>,
    success: Histogram,
    failure: Histogram,
    upstream: [IntCounter; 5],
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ldc_router_requests_total",
                "Requests answered, by cell, method and status class",
            ),
            &["cell", "method", "class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ldc_router_request_duration_seconds",
                "Time to response headers, by cell and outcome (success: status below 500)",
            )
            .buckets(BUCKETS.to_vec()),
            &["cell", "outcome"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "ldc_router_upstream_errors_total",
                "Failed attempts to get a response from a cell, by kind",
            ),
            &["cell", "kind"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "ldc_router_retries_total",
                "Requests sent a second time, by why the first attempt did not do",
            ),
            &["reason"],
        )?;
        let in_flight = IntGauge::new("ldc_router_in_flight", "Requests being served")?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        let auth = AuthMetrics::register(registry)?;
        Ok(Self {
            requests,
            duration,
            upstream_errors,
            retries: ["connect_failed", "misdirected", "refused"]
                .map(|r| retries.with_label_values(&[r])),
            in_flight,
            auth,
        })
    }

    /// Counts a second attempt; `misdirected` when the first got a 421.
    pub fn retry(&self, why: Retry) {
        self.retries[why as usize].inc();
    }

    pub fn cell(&self, cell: &str) -> CellMetrics {
        CellMetrics {
            requests: METHODS
                .iter()
                .map(|m| CLASSES.map(|c| self.requests.with_label_values(&[cell, m, c])))
                .collect(),
            success: self.duration.with_label_values(&[cell, "success"]),
            failure: self.duration.with_label_values(&[cell, "failure"]),
            upstream: ["connect", "failed", "timeout", "refused", "saturated"]
                .map(|kind| self.upstream_errors.with_label_values(&[cell, kind])),
        }
    }
}

impl CellMetrics {
    /// Counts an answer; `method` is `None` for a request whose head was unreadable.
    pub fn observe(&self, method: Option<&Method>, status: StatusCode, seconds: f64) {
        let method = match method {
            Some(&Method::GET) => 0,
            Some(&Method::POST) => 1,
            Some(&Method::PUT) => 2,
            Some(&Method::DELETE) => 3,
            Some(&Method::PATCH) => 4,
            Some(&Method::HEAD) => 5,
            _ => 6,
        };
        let class = usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        self.requests[method][class].inc();
        if status.is_server_error() {
            self.failure.observe(seconds);
        } else {
            self.success.observe(seconds);
        }
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream[kind as usize].inc();
    }
}

/// How requests fared against `[auth]`, by [`AuthOutcome`]: the cache's hit ratio
/// (`cached` against `verified`) tells whether `auth.cache_entries` is large enough.
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    outcomes: [IntCounter; 5],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Accepted from the cache of verified tokens.
    Cached,
    /// Accepted after checking the signature and claims.
    Verified,
    Missing,
    Expired,
    Invalid,
}

impl AuthMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "ldc_router_auth_total",
                "Bearer tokens checked, by outcome (cached, verified or the refusal's code)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        Ok(Self {
            outcomes: [
                "cached",
                "verified",
                "token_missing",
                "token_expired",
                "token_invalid",
            ]
            .map(|outcome| outcomes.with_label_values(&[outcome])),
        })
    }

    pub fn count(&self, outcome: AuthOutcome) {
        self.outcomes[outcome as usize].inc();
    }

    /// Tokens counted with `outcome` so far.
    #[cfg(test)]
    pub fn counted(&self, outcome: AuthOutcome) -> u64 {
        self.outcomes[outcome as usize].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_status_a_cell_sends_is_counted_in_a_class() {
        let metrics = Metrics::register(&Registry::new()).expect("registered");
        let cell = metrics.cell("a1");
        for code in [100, 204, 302, 404, 503, 599, 600, 999] {
            let status = StatusCode::from_u16(code).expect("a valid status");
            cell.observe(Some(&Method::GET), status, 0.001);
        }
        let counted = CLASSES.map(|class| {
            metrics
                .requests
                .with_label_values(&["a1", "GET", class])
                .get()
        });
        // Past 5xx there are no classes: the rest count as 5xx.
        assert_eq!(counted, [1, 1, 1, 1, 4]);
    }
}

//! The cell's metric families: per shard (ledger, stock, leases) and per process
//! (requests, orders). Registered once in the registry passed in.

use std::sync::OnceLock;

use http::StatusCode;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Metric families labelled by shard, registered once per process. A shard takes
/// its children when opened and [`ShardMetrics::forget`]s them when released.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    pub(crate) commit_seconds: HistogramVec,
    pub(crate) batch_size: HistogramVec,
    pub(crate) stock_remaining: IntGaugeVec,
    pub(crate) epoch: IntGaugeVec,
    pub(crate) keeper: KeeperMetrics,
}

impl ShardMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let commit_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ldc_ledger_commit_seconds",
                "Time to apply and durably commit one batch",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            &["shard"],
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("ldc_ledger_batch_size", "Requests per committed batch")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 12)?),
            &["shard"],
        )?;
        let stock_remaining = IntGaugeVec::new(
            Opts::new(
                "ldc_cell_stock_remaining",
                "Units of an item a shard can still sell",
            ),
            &["shard", "item"],
        )?;
        let epoch = IntGaugeVec::new(
            Opts::new(
                "ldc_cell_shard_epoch",
                "Ownership epoch of each shard this process serves",
            ),
            &["shard"],
        )?;
        let leases = IntCounterVec::new(
            Opts::new(
                "ldc_cell_leases_total",
                "Calls to the global zone for stock, by outcome: granted, empty \
                 (nothing left to lease), returned, failed",
            ),
            &["shard", "outcome"],
        )?;
        let lease_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ldc_cell_lease_seconds",
                "Round trip of one lease or return to the global zone",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            &["shard"],
        )?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(stock_remaining.clone()))?;
        registry.register(Box::new(epoch.clone()))?;
        registry.register(Box::new(leases.clone()))?;
        registry.register(Box::new(lease_seconds.clone()))?;
        Ok(Self {
            commit_seconds,
            batch_size,
            stock_remaining,
            epoch,
            keeper: KeeperMetrics {
                leases,
                lease_seconds,
            },
        })
    }

    /// Drops the series of a shard this process no longer serves.
    pub(crate) fn forget(&self, shard: &str, items: &[String]) {
        // A series that was never created is not an error worth a word.
        let _ = self.commit_seconds.remove_label_values(&[shard]);
        let _ = self.batch_size.remove_label_values(&[shard]);
        let _ = self.epoch.remove_label_values(&[shard]);
        let _ = self.keeper.lease_seconds.remove_label_values(&[shard]);
        for outcome in ["granted", "empty", "returned", "failed"] {
            let _ = self.keeper.leases.remove_label_values(&[shard, outcome]);
        }
        for item in items {
            let _ = self.stock_remaining.remove_label_values(&[shard, item]);
        }
    }
}

/// The keeper's metrics, children of the process's per-shard families.
#[derive(Debug, Clone)]
pub struct KeeperMetrics {
    /// `ldc_cell_leases_total{shard, outcome}`: granted, empty, returned, failed.
    pub(crate) leases: IntCounterVec,
    /// `ldc_cell_lease_seconds{shard}`: one call to the global zone.
    pub(crate) lease_seconds: HistogramVec,
}

/// Order outcomes counted by `ldc_cell_orders_total`.
pub(crate) struct OrderMetrics {
    pub(crate) confirmed: IntCounter,
    pub(crate) sold_out: IntCounter,
    pub(crate) declined: IntCounter,
    pub(crate) failed: IntCounter,
    /// Time buyers at a cell with no unit left waited for a lease.
    pub(crate) lease_wait: Histogram,
}

impl OrderMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let orders = IntCounterVec::new(
            Opts::new(
                "ldc_cell_orders_total",
                "Order requests by outcome: confirmed, sold_out (fast path), declined \
                 (funds, replays, bad input), failed (ledger unavailable)",
            ),
            &["outcome"],
        )?;
        let lease_wait = Histogram::with_opts(
            HistogramOpts::new(
                "ldc_cell_lease_wait_seconds",
                "Time an order waited for stock from the global zone (only orders that waited)",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(lease_wait.clone()))?;
        Ok(Self {
            lease_wait,
            confirmed: orders.with_label_values(&["confirmed"]),
            sold_out: orders.with_label_values(&["sold_out"]),
            declined: orders.with_label_values(&["declined"]),
            failed: orders.with_label_values(&["failed"]),
        })
    }
}

/// `ldc_cell_requests_total{code}`, with each code's counter looked up once: on
/// the sold-out fast path the label lookup was a visible share of the cell's CPU.
pub(crate) struct RequestCounts {
    family: IntCounterVec,
    /// Indexed by status code minus 100, for codes 100 to 599.
    by_code: Vec<OnceLock<IntCounter>>,
}

impl RequestCounts {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let family = IntCounterVec::new(
            Opts::new(
                "ldc_cell_requests_total",
                "Requests answered by this cell, by status code",
            ),
            &["code"],
        )?;
        registry.register(Box::new(family.clone()))?;
        Ok(Self {
            family,
            by_code: (100..600).map(|_| OnceLock::new()).collect(),
        })
    }

    pub(crate) fn count(&self, status: StatusCode) {
        let code = usize::from(status.as_u16());
        match code
            .checked_sub(100)
            .and_then(|index| self.by_code.get(index))
        {
            Some(counter) => counter
                .get_or_init(|| self.family.with_label_values(&[status.as_str()]))
                .inc(),
            // Beyond the standard range: looked up each time, never a panic.
            None => self.family.with_label_values(&[status.as_str()]).inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> (Registry, RequestCounts) {
        let registry = Registry::new();
        let counts = RequestCounts::register(&registry).expect("registered once");
        (registry, counts)
    }

    fn counted(registry: &Registry, code: &str) -> u64 {
        registry
            .gather()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|metric| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.get_value() == code)
            })
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }

    #[test]
    fn every_status_code_is_counted_without_a_panic() {
        let (registry, counts) = counts();
        for code in [100, 200, 200, 421, 599, 600, 999] {
            counts.count(StatusCode::from_u16(code).expect("a valid status code"));
        }
        assert_eq!(counted(&registry, "200"), 2);
        assert_eq!(counted(&registry, "599"), 1);
        assert_eq!(
            counted(&registry, "600"),
            1,
            "past the table, still counted"
        );
        assert_eq!(counted(&registry, "999"), 1);
    }
}

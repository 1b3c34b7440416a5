//! The cell's admin routes beside the shared ones: `/admin/topology`,
//! `/admin/audit`, the global zone's item routes, and the shards in `/ready`.

use std::sync::Arc;

use ldc_serve::{AdminRoutes, Body, json};
use serde_json::json as value;

use crate::cell::Cell;
use crate::ledger;
use crate::shard::Shard;
use crate::store::{Store, StoreError};

/// `/admin/topology` and `/admin/audit`, and the shards this cell serves in `/ready`.
pub(crate) struct CellAdmin<S>(pub(crate) Arc<Cell<S>>);

impl<S: Store> AdminRoutes for CellAdmin<S> {
    async fn get(&self, path: &str) -> Option<http::Response<Body>> {
        match path {
            "/admin/topology" => {
                let mut summary = value!(self.0.topology().summary());
                summary["shards"] = self.shards();
                Some(json(http::StatusCode::OK, &summary))
            }
            "/admin/audit" => Some(self.audit().await),
            _ => None,
        }
    }

    async fn write(
        &self,
        method: &http::Method,
        path: &str,
        body: &[u8],
    ) -> Option<http::Response<Body>> {
        self.0.admin_item(method, path, body).await
    }

    fn ready(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::from_iter([("shards".to_owned(), self.shards())])
    }
}

impl<S: Store> CellAdmin<S> {
    /// Every shard this cell serves now, with the epoch it holds it at: what
    /// routers route by.
    fn shards(&self) -> serde_json::Value {
        let cell = &self.0;
        let topology = cell.topology();
        let cells = topology.cells();
        let taken = cell.taken();
        let shards: Vec<serde_json::Value> = std::iter::once(cell.own())
            .chain(taken.iter())
            .map(|shard| value!({"cell": cells[shard.cell].id, "epoch": shard.epoch}))
            .collect();
        serde_json::Value::from(shards)
    }

    /// The ledger's books recomputed from every record, next to the stock cache: the
    /// own shard's at the top, taken-over shards' under `taken_over`.
    async fn audit(&self) -> http::Response<Body> {
        let cell = &self.0;
        let topology = cell.topology();
        let cells = topology.cells();
        let mut report = match audit_shard(cell.own()).await {
            Ok(report) => report,
            Err(err) => return unavailable(&err),
        };
        let mut taken_over = serde_json::Map::new();
        for shard in cell.taken().iter() {
            match audit_shard(shard).await {
                Ok(audit) => taken_over.insert(cells[shard.cell].id.clone(), audit),
                Err(err) => return unavailable(&err),
            };
        }
        report["taken_over"] = serde_json::Value::Object(taken_over);
        if let Ok(shard) = cell.global_zone_shard() {
            let books = async {
                let mut snapshot = shard.store.snapshot().await?;
                ledger::gz::audit(&mut snapshot).await
            };
            match books.await {
                Ok(books) => report["global_zone"] = books,
                Err(err) => return unavailable(&err),
            }
        }
        json(http::StatusCode::OK, &report)
    }
}

async fn audit_shard<S: Store>(shard: &Shard<S>) -> Result<serde_json::Value, StoreError> {
    let ids = shard.stock.ids();
    let mut snapshot = shard.store.snapshot().await?;
    let audit = ledger::audit(&mut snapshot, &ids).await?;
    let cache: serde_json::Map<String, serde_json::Value> = ids
        .iter()
        .filter_map(|id| shard.stock.item(id))
        .map(|item| (item.id.clone(), value!(item.remaining())))
        .collect();
    Ok(value!({"epoch": shard.epoch, "ledger": audit, "cache_remaining": cache}))
}

fn unavailable(err: &StoreError) -> http::Response<Body> {
    ldc_serve::json_error(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "ledger_unavailable",
        err.to_string(),
        [],
    )
}

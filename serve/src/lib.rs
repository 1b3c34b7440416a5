//! Process plumbing shared by the router and the cells: the serve loop with a
//! connection limit and a drain deadline, an HTTP/1.1 server for proxies, bounded
//! body reading, the admin listener, the lifecycle phase, JSON responses, and the
//! shutdown signal.

mod admin;
mod body;
mod coalesce;
mod http1;
mod idle;
mod phase;
mod preface;
mod reply;
mod server;
mod signal;
#[cfg(test)]
mod testing;

pub use admin::{AdminRoutes, serve_with_admin};
pub use body::{BodyError, content_length, read_bounded};
pub use coalesce::Coalesce;
pub use http1::{ChunkError, HeadError, Http1Error, Http1Limits, Http1Service, serve_http1};
pub use phase::{Phase, PhaseTx, phase_channel};
pub use reply::{Body, error_body, error_chain, json, json_bytes, json_error};
pub use server::{Handler, Http1Connection, MAX_CONCURRENT_STREAMS, ServeSettings, Served, serve};
pub use signal::{announce, reload_on_sighup, serve_reloading, shutdown_signal};

//! Values of the deploy-file keys a file leaves out, one function per key for serde's `default`.

use std::path::PathBuf;

pub fn name() -> String {
    "ldc".to_owned()
}
pub fn slots() -> u32 {
    4096
}
pub fn epoch() -> u64 {
    1
}
pub fn data_dir() -> PathBuf {
    PathBuf::from("./data")
}
pub fn vnodes_per_weight() -> u32 {
    1024
}
pub fn connect_timeout_ms() -> u64 {
    1_000
}
pub fn header_read_timeout_ms() -> u64 {
    5_000
}
pub fn http2_idle_timeout_ms() -> u64 {
    60_000
}
pub fn request_timeout_ms() -> u64 {
    10_000
}
pub fn drain_timeout_ms() -> u64 {
    10_000
}
pub fn pool_idle_timeout_ms() -> u64 {
    90_000
}
pub fn tls_handshake_timeout_ms() -> u64 {
    3_000
}
pub fn retry_after_s() -> u64 {
    1
}
pub fn max_body_bytes() -> u64 {
    64 * 1024
}
pub fn max_connections() -> u32 {
    10_000
}
pub fn pool_max_idle_per_cell() -> u32 {
    256
}
pub fn restart_backoff_initial_ms() -> u64 {
    500
}
pub fn restart_backoff_max_ms() -> u64 {
    10_000
}
pub fn ready_timeout_ms() -> u64 {
    30_000
}
pub fn http2_to_cells() -> bool {
    true
}
pub fn health_interval_ms() -> u64 {
    100
}
pub fn health_timeout_ms() -> u64 {
    250
}
pub fn health_fall() -> u32 {
    2
}
pub fn health_rise() -> u32 {
    1
}
pub fn health_max_backoff_ms() -> u64 {
    1_000
}
pub fn takeover_poll_ms() -> u64 {
    50
}
pub fn release_timeout_ms() -> u64 {
    5_000
}
pub fn startup_grace_ms() -> u64 {
    10_000
}
pub fn lease_ms() -> u64 {
    3_000
}
pub fn weight() -> u32 {
    1
}
pub fn max_order_quantity() -> u32 {
    10
}
pub fn max_page() -> u32 {
    100
}
pub fn batch_max() -> u32 {
    256
}
pub fn batch_wait_us() -> u64 {
    0
}
pub fn queue_capacity() -> u32 {
    8192
}
pub fn op_timeout_ms() -> u64 {
    2_000
}
pub fn conflict_retries() -> u32 {
    3
}
pub fn gz_poll_ms() -> u64 {
    200
}
pub fn lease_min() -> u64 {
    10
}
pub fn lease_max() -> u64 {
    1_000
}
pub fn lease_horizon_ms() -> u64 {
    1_000
}
pub fn lease_wait_ms() -> u64 {
    1_000
}
pub fn gz_request_timeout_ms() -> u64 {
    1_000
}

//! End-to-end tests of the whole cluster, linked as one binary: real `ldc`
//! processes on port 0, readiness waited on, cells killed with SIGKILL.

mod auth;
mod cli;
mod cluster;
mod failover;
mod flash_sale;
mod global_zone;
mod ledger;
mod openapi;
mod readme;
mod rotation;
mod router;
mod security;
mod support;
#[cfg(feature = "tikv")]
mod tikv;

//! The `ldc` command: router, cell, the local supervisor (`ldc up`), the load tool
//! (`ldc bench`) and config tools, plus the small HTTP client they and the end-to-end
//! tests share.

pub mod bench;
pub mod client;
pub mod supervisor;

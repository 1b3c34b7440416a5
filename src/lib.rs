//! The `ldc` command: router, cell, the local supervisor (`ldc up`), the load tool
//! (`ldc bench`), the chaos tool (`ldc chaos`) and config tools, plus the small HTTP client they and the end-to-end
//! tests share.

pub mod bench;
pub mod chaos;
pub mod client;
pub mod supervisor;

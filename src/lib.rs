//! The `ldc` command: router, cell, the local supervisor (`ldc up`), the load tool
//! (`ldc bench`), the chaos tool (`ldc chaos`), the certificates of the peer plane
//! (`ldc certs`) and config tools, plus the small HTTP client they and the end-to-end
//! tests share.

pub mod bench;
pub mod certs;
pub mod chaos;
pub mod client;
pub mod supervisor;

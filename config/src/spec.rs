//! The cells and routers of a validated topology: typed addresses, standbys as cell indices.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A cell of a validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSpec {
    pub id: String,
    pub region: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub admin: SocketAddr,
    /// Where other cells reach this one (bound and advertised alike).
    pub peer: SocketAddr,
    pub weight: u32,
    /// Index of the standby cell.
    pub standby: Option<usize>,
    /// Where the cell's ledger lives.
    pub data_dir: PathBuf,
}

/// A router of a validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    pub id: String,
    pub region: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

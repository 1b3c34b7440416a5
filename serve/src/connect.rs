//! How a process reaches a cell: TCP with a connect timeout, then, in a secure
//! deployment, mutual TLS that checks the other side is the cell the topology
//! places at that address. Addresses the topology does not give a cell (admin
//! listeners, routers) are reached over plain TCP.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;
use hyper_util::rt::TokioIo;
use ldc_topology::Topology;
use tokio::net::TcpStream;

use crate::stream::Stream;
use crate::tls::{ALPN_H2, ALPN_HTTP1, Identity, Role, Tls};

/// Opens connections to cells, checking who answers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: Option<Arc<Tls>>,
    /// The cell at each user and peer address of the current topology.
    cells: Arc<ArcSwap<HashMap<SocketAddr, Identity>>>,
    connect_timeout: Duration,
}

impl Connector {
    /// Connects as `tls`'s identity, or in plain TCP when `tls` is `None` (an
    /// insecure deployment).
    pub fn new(tls: Option<Arc<Tls>>, topology: &Topology, connect_timeout: Duration) -> Self {
        let connector = Self {
            tls,
            ..Self::plain(connect_timeout)
        };
        connector.set_topology(topology);
        connector
    }

    /// Plain TCP to every address.
    pub fn plain(connect_timeout: Duration) -> Self {
        Self {
            tls: None,
            cells: Arc::default(),
            connect_timeout,
        }
    }

    /// Takes the cells' addresses from `topology` (after a reload).
    pub fn set_topology(&self, topology: &Topology) {
        let deployment = &topology.deploy().name;
        let mut cells = HashMap::new();
        for cell in topology.cells() {
            let Ok(identity) = Identity::new(deployment.as_str(), Role::Cell, cell.id.as_str())
            else {
                continue;
            };
            for address in [cell.listen, cell.advertise, cell.peer] {
                if address.port() != 0 {
                    cells.insert(address, identity.clone());
                }
            }
        }
        self.cells.store(Arc::new(cells));
    }

    /// A connection to `address`, over TLS offering `alpn` when it is a cell's in
    /// a secure deployment.
    pub async fn connect(&self, address: SocketAddr, alpn: &[&[u8]]) -> io::Result<Stream> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connect to {address}: no answer within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                )
            })??;
        tcp.set_nodelay(true)?;
        let cell = self.cells.load().get(&address).cloned();
        let (Some(tls), Some(cell)) = (&self.tls, cell) else {
            return Ok(Stream::Plain(tcp));
        };
        let tls = tls
            .connect(tcp, &cell, alpn, self.connect_timeout)
            .await
            .map_err(|err| io::Error::other(format!("{cell} at {address}: {err}")))?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }

    /// A connection for HTTP/2 (prior knowledge, or ALPN `h2`).
    pub async fn connect_h2(&self, address: SocketAddr) -> io::Result<Stream> {
        self.connect(address, &[ALPN_H2]).await
    }
}

/// For hyper's pooled HTTP/1.1 client: `http://ADDR` URIs.
impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let address = uri
                .authority()
                .and_then(|authority| authority.as_str().parse::<SocketAddr>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{uri}: not an ip:port address"),
                    )
                })?;
            let stream = connector.connect(address, &[ALPN_HTTP1]).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

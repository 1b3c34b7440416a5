//! Listeners that can stop and listen again on the same address, cutting the
//! connections they accepted: a server restart as its clients see it, without
//! losing the server's state.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An accepted connection; it fails every read and write once its listener has
/// been stopped since it was accepted.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    born: u64,
    generation: Arc<AtomicU64>,
}

impl Conn {
    fn cut(&self) -> Option<io::Error> {
        (self.generation.load(Ordering::Acquire) != self.born)
            .then(|| io::Error::new(io::ErrorKind::ConnectionReset, "testkv stopped listening"))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.cut() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(err) = this.cut() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// One listening address, feeding the connections it accepts to a server.
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    generation: Arc<AtomicU64>,
    accepted: mpsc::Sender<Conn>,
    accepting: std::sync::Mutex<Option<JoinHandle<()>>>,
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Listener {
    /// Listens on `addr` (port 0: any); the server reads connections from the
    /// returned stream, which lives as long as the listener does.
    pub fn bind(addr: SocketAddr) -> io::Result<(Self, mpsc::Receiver<Conn>)> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let (accepted, incoming) = mpsc::channel(64);
        let this = Self {
            addr,
            generation: Arc::new(AtomicU64::new(0)),
            accepted,
            accepting: std::sync::Mutex::new(None),
        };
        this.accept_from(listener);
        Ok((this, incoming))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.accepting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn accept_from(&self, listener: TcpListener) {
        let (accepted, generation) = (self.accepted.clone(), self.generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // Out of file descriptors, say: wait, rather than spin.
                        tracing::warn!(%err, "testkv: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Conn {
                    stream,
                    born: generation.load(Ordering::Acquire),
                    generation: generation.clone(),
                };
                if accepted.send(conn).await.is_err() {
                    return;
                }
            }
        });
        if let Some(old) = self.slot().replace(task) {
            old.abort();
        }
    }

    /// Closes the port and cuts every connection accepted so far.
    pub async fn stop(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let task = self.slot().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same address again.
    pub fn resume(&self) -> io::Result<()> {
        if self.slot().is_some() {
            return Ok(());
        }
        let listener = bind(self.addr)?;
        self.accept_from(listener);
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.slot().take() {
            task.abort();
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

//! How a new connection opens: HTTP/2 with prior knowledge (its connection
//! preface) or HTTP/1.1, told apart within the header read timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::stream::Stream;

/// HTTP/2's connection preface (RFC 9113 section 3.4). No HTTP/1.1 method is
/// `PRI`, so its first four bytes tell the protocols apart.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug)]
pub enum Opening {
    Http1(Stream),
    Http2(AfterPreface),
}

/// What the client opened with, by `timeout`: `None` when it closed, sent nothing,
/// or began HTTP/2's preface without completing it. An HTTP/1.1 head is not
/// waited for here: its server bounds that itself.
pub async fn opening(
    mut stream: TcpStream,
    timeout: Duration,
    moved: Arc<AtomicU64>,
) -> Option<Opening> {
    let read = async {
        let mut head = [0u8; 4];
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return None,
            Ok(n) if n < head.len() || head != PREFACE[..4] => return Some(false),
            Ok(_) => {}
        }
        // Read, not peeked, so that a client stalling within the preface meets
        // the timeout here: h2's handshake has none. Given back to the server by
        // `AfterPreface`.
        let mut preface = [0u8; PREFACE.len()];
        stream.read_exact(&mut preface).await.ok()?;
        (preface == *PREFACE).then_some(true)
    };
    let http2 = tokio::time::timeout(timeout, read).await.ok().flatten()?;
    Some(if http2 {
        Opening::Http2(AfterPreface {
            replayed: 0,
            stream: Stream::Plain(stream),
            moved,
        })
    } else {
        Opening::Http1(Stream::Plain(stream))
    })
}

/// How a TLS connection opens: as its handshake agreed (ALPN `h2` or HTTP/1.1).
/// Its server reads the HTTP/2 preface itself.
pub fn tls_opening(stream: Stream, h2: bool, moved: Arc<AtomicU64>) -> Opening {
    if h2 {
        Opening::Http2(AfterPreface {
            replayed: PREFACE.len(),
            stream,
            moved,
        })
    } else {
        Opening::Http1(stream)
    }
}

/// A connection whose preface was read by [`opening`]: reads give the preface
/// again, then what follows it. Counts the reads and writes that moved bytes,
/// for the idle check of [`crate::idle`].
#[derive(Debug)]
pub struct AfterPreface {
    replayed: usize,
    stream: Stream,
    moved: Arc<AtomicU64>,
}

impl AfterPreface {
    /// Grows each time a read or a write moves bytes.
    pub fn moved(&self) -> Arc<AtomicU64> {
        self.moved.clone()
    }

    fn count<T>(
        &self,
        outcome: Poll<io::Result<T>>,
        bytes: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(n)) = &outcome
            && bytes(n)
        {
            self.moved.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}

impl AsyncRead for AfterPreface {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &PREFACE[this.replayed..];
        if rest.is_empty() {
            let before = buf.filled().len();
            let read = Pin::new(&mut this.stream).poll_read(cx, buf);
            let grew = buf.filled().len() > before;
            return this.count(read, |()| grew);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.replayed += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for AfterPreface {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.count(written, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.count(written, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use std::sync::Arc;

    use super::{Opening, PREFACE, opening};

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// A connected client, and the server's side of its connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    /// How the server takes a connection whose client sent `sent` first.
    async fn opened_with(sent: &[u8]) -> (TcpStream, Option<Opening>) {
        let (mut client, server) = pair().await;
        client.write_all(sent).await.expect("write");
        (client, opening(server, TIMEOUT, Arc::default()).await)
    }

    #[tokio::test]
    async fn the_http2_preface_opens_http2_and_is_read_again_by_its_server() {
        let sent = [&PREFACE[..], b"SETTINGS"].concat();
        let (mut client, opened) = opened_with(&sent).await;
        let Some(Opening::Http2(mut stream)) = opened else {
            panic!("not HTTP/2: {opened:?}");
        };
        let moved = stream.moved();
        let mut preface = [0u8; PREFACE.len()];
        stream.read_exact(&mut preface).await.expect("read");
        assert_eq!(&preface, PREFACE);
        // Replayed, not received: the idle check counts what the client sends.
        assert_eq!(moved.load(Ordering::Relaxed), 0);
        let mut settings = [0u8; 8];
        stream.read_exact(&mut settings).await.expect("read");
        assert_eq!(&settings, b"SETTINGS");
        let after_read = moved.load(Ordering::Relaxed);
        assert!(after_read >= 1, "reads not counted");
        stream.write_all(b"ack").await.expect("write");
        assert!(
            moved.load(Ordering::Relaxed) > after_read,
            "writes not counted"
        );
        let mut ack = [0u8; 3];
        client.read_exact(&mut ack).await.expect("read the ack");
        assert_eq!(&ack, b"ack");
    }

    #[tokio::test]
    async fn anything_else_opens_http1_with_nothing_consumed() {
        for sent in [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], b"PRX", b"G"] {
            let (_client, opened) = opened_with(sent).await;
            let Some(Opening::Http1(mut stream)) = opened else {
                panic!("{sent:?} is not HTTP/1.1: {opened:?}");
            };
            let mut read = vec![0u8; sent.len()];
            stream.read_exact(&mut read).await.expect("read");
            assert_eq!(read, sent);
        }
    }

    #[tokio::test]
    async fn a_false_or_unfinished_preface_is_dropped() {
        for sent in [&b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n"[..], &PREFACE[..10]] {
            let (_client, opened) = opened_with(sent).await;
            assert!(opened.is_none(), "{sent:?} was taken: {opened:?}");
        }
    }

    #[tokio::test]
    async fn a_client_that_closes_or_stays_silent_is_dropped() {
        let (client, server) = pair().await;
        drop(client);
        assert!(opening(server, TIMEOUT, Arc::default()).await.is_none());
        let (_silent, server) = pair().await;
        let started = tokio::time::Instant::now();
        assert!(opening(server, TIMEOUT, Arc::default()).await.is_none());
        assert!(started.elapsed() >= TIMEOUT);
    }
}

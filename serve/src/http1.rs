//! An HTTP/1.1 server for proxies: reads each request whole (head and body,
//! bounded in size and in time), hands it to an [`Http1Service`], and writes the
//! response in one write when it is whole.
//!
//! A request costs one read and one write here, as in hyper's server, but a
//! proxy needs little of what a general server does per request (a body channel
//! to the handler, a dispatch state machine, a timer armed per request): hyper's
//! HTTP/1.1 server spent about 15,600 user-space instructions per request the
//! router proxied, this one about 9,000 (`scripts/instructions.sh`).

mod chunked;
mod parse;
mod refusal;
mod response;
#[cfg(test)]
mod tests;

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use hyper::body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use self::chunked::{ChunkedDecoder, Decoded};
use self::parse::{Framing, Head, MAX_HEAD_BYTES, parse_head};
use self::response::{Asked, Shape, write_head};
use crate::stream::Stream;
use crate::tls::Identity;

pub use self::chunked::ChunkError;
pub use self::parse::HeadError;
pub use self::refusal::RequestError;

/// Response bytes held before they are written while a body still streams.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// How long a closing connection keeps reading (and dropping) what its client
/// still sends, so that the client reads the answer before the reset.
const LINGER: Duration = Duration::from_secs(1);

/// What [`serve_http1`] hands each request to. A [`crate::Handler`] that does not
/// take HTTP/1.1 connections itself is served through one (`front.rs`).
pub trait Http1Service: Send + Sync + 'static {
    /// Streamed to the client as it comes, each wait bounded by
    /// [`Http1Limits::stall_timeout`].
    type Body: Body<Data = Bytes, Error: Display> + Send + Unpin;

    /// The response to a request whose body was read whole.
    fn answer(&self, req: Request<Bytes>) -> impl Future<Output = Response<Self::Body>> + Send;

    /// The answer to a request that could not be read (`method` is `None` when
    /// its head could not be); the connection closes after it.
    fn reject(&self, method: Option<&Method>, error: RequestError) -> Response<Self::Body>;
}

/// The bounds a client connection is held to, beside the header read timeout of
/// [`Http1Connection`].
#[derive(Debug, Clone, Copy)]
pub struct Http1Limits {
    /// Time a client gets to send a body, and to take any part of a response.
    pub body_timeout: Duration,
    pub max_body_bytes: u64,
    /// Time a response body gets to yield its next part once started.
    pub stall_timeout: Duration,
}

/// An accepted HTTP/1.1 connection, for [`crate::Handler::take_http1`].
#[derive(Debug)]
pub struct Http1Connection {
    pub stream: Stream,
    pub peer: SocketAddr,
    /// Who the client proved to be, on a TLS listener: put in each request's
    /// extensions.
    pub identity: Option<Arc<Identity>>,
    /// Grows with each read or write that moves bytes: what tells a quiet
    /// connection from a busy one when the listener is full (`open.rs`).
    pub moved: Arc<AtomicU64>,
    pub header_read_timeout: Duration,
    /// Becomes true when the listener stops: finish the request in hand, close.
    /// The listener's drain waits for the connection up to its deadline.
    pub closing: watch::Receiver<bool>,
    /// The listener's bounds on a request's body.
    pub limits: Http1Limits,
}

/// Serves `conn` until its client closes it, a request asks to close it, it breaks
/// a limit, or the listener stops.
pub async fn serve_http1<S: Http1Service>(service: Arc<S>, conn: Http1Connection) {
    let Http1Connection {
        stream,
        peer,
        identity,
        moved,
        header_read_timeout,
        mut closing,
        limits,
    } = conn;
    let mut conn = Conn {
        stream,
        moved,
        read: BytesMut::with_capacity(8 * 1024),
        write: Vec::with_capacity(8 * 1024),
        timer: Timer::new(),
        limits,
    };
    // Read once per request: when the last response was ready.
    let mut now = Instant::now();
    loop {
        // The deadline counts from the end of the last response: a keep-alive
        // connection idle longer than the header read timeout is closed.
        let head = match conn
            .read_head(now + header_read_timeout, &mut closing)
            .await
        {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(Broken::Reject(error)) => {
                conn.reject(&*service, None, error).await;
                return;
            }
            Err(Broken::Gone(cause)) => {
                tracing::debug!(%peer, %cause, "client connection ended");
                return;
            }
        };
        let keep_alive = head.keep_alive && !*closing.borrow();
        if head.expects_continue && head.framing != Framing::Empty {
            conn.write
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body = match conn.read_body(head.framing).await {
            Ok(body) => body,
            Err(Broken::Reject(error)) => {
                conn.reject(&*service, Some(head.request.method()), error)
                    .await;
                return;
            }
            Err(Broken::Gone(cause)) => {
                tracing::debug!(%peer, %cause, "client connection ended in a body");
                return;
            }
        };
        let asked = Asked {
            head: head.request.method() == Method::HEAD,
            version: head.request.version(),
        };
        let mut request = head.request.map(|()| body);
        if let Some(identity) = &identity {
            request.extensions_mut().insert(identity.clone());
        }
        let response = service.answer(request).await;
        // `closing` may have changed while the request was being answered.
        let keep_alive = keep_alive && !*closing.borrow();
        let written = conn.write_response(response, asked, keep_alive).await;
        now = Instant::now();
        match written {
            Ok(true) => {}
            Ok(false) => {
                conn.linger().await;
                return;
            }
            Err(cause) => {
                tracing::debug!(%peer, %cause, "response not delivered");
                return;
            }
        }
    }
}

/// Why a connection stops before its request was answered.
enum Broken {
    /// The request breaks a rule: answered, then the connection closes.
    Reject(RequestError),
    /// The client went away or stalled: nothing to answer.
    Gone(String),
}

impl<E: Into<RequestError>> From<E> for Broken {
    fn from(error: E) -> Self {
        Self::Reject(error.into())
    }
}

struct Conn {
    stream: Stream,
    /// Counts reads and writes that moved bytes (`open.rs`).
    moved: Arc<AtomicU64>,
    read: BytesMut,
    write: Vec<u8>,
    timer: Timer,
    limits: Http1Limits,
}

impl Conn {
    /// The next request's head, or `None` when the client closed between requests,
    /// stayed silent past `deadline`, or the listener is stopping.
    async fn read_head(
        &mut self,
        deadline: Instant,
        closing: &mut watch::Receiver<bool>,
    ) -> Result<Option<Head>, Broken> {
        loop {
            if !self.read.is_empty()
                && let Some(head) = parse_head(&mut self.read)?
            {
                return Ok(Some(head));
            }
            if *closing.borrow_and_update() && self.read.is_empty() {
                return Ok(None);
            }
            self.read.reserve(4096);
            let idle = self.read.is_empty();
            let read = tokio::select! {
                biased;
                read = self.timer.bound(deadline, self.stream.read_buf(&mut self.read)) => read,
                _ = closing.changed(), if idle => return Ok(None),
            };
            match read {
                Some(Ok(0)) if idle => return Ok(None),
                Some(Ok(0)) => return Err(Broken::Gone("closed within a request head".into())),
                Some(Ok(_)) => self.moved(),
                Some(Err(err)) if idle => {
                    tracing::debug!(cause = %err, "read between requests failed");
                    return Ok(None);
                }
                Some(Err(err)) => return Err(Broken::Gone(err.to_string())),
                None if idle => return Ok(None),
                None => return Err(Broken::Gone("request head not received in time".into())),
            }
        }
    }

    /// The request's body, whole: at most `max_body_bytes` bytes, received within
    /// the body timeout.
    async fn read_body(&mut self, framing: Framing) -> Result<Bytes, Broken> {
        let deadline = || Instant::now() + self.limits.body_timeout;
        let body = match framing {
            Framing::Empty => return Ok(Bytes::new()),
            Framing::Length(len) => self.read_length(len, deadline()).await?,
            Framing::Chunked => self.read_chunked(deadline()).await?,
        };
        self.shed_buffer(body.len());
        Ok(body)
    }

    async fn read_length(&mut self, len: u64, deadline: Instant) -> Result<Bytes, Broken> {
        let max = self.limits.max_body_bytes;
        if len > max {
            return Err(RequestError::BodyTooLarge(max).into());
        }
        let len = len as usize;
        while self.read.len() < len {
            self.fill(len - self.read.len(), deadline).await?;
        }
        Ok(self.read.split_to(len).freeze())
    }

    async fn read_chunked(&mut self, deadline: Instant) -> Result<Bytes, Broken> {
        let mut decoder = ChunkedDecoder::new(self.limits.max_body_bytes);
        loop {
            match decoder.decode(&mut self.read)? {
                Decoded::Body(body) => return Ok(body),
                Decoded::Need(wanted) => self.fill(wanted, deadline).await?,
            }
        }
    }

    /// After a large body, a read buffer of its own size: the body's allocation
    /// goes with the body instead of staying with the connection, which may idle
    /// for long.
    fn shed_buffer(&mut self, body_len: usize) {
        if body_len > MAX_HEAD_BYTES || self.read.capacity() > 2 * MAX_HEAD_BYTES {
            let mut fresh = BytesMut::with_capacity(self.read.len().max(8 * 1024));
            fresh.extend_from_slice(&self.read);
            self.read = fresh;
        }
    }

    /// Reads at least once more into the read buffer (`wanted` bytes, or less).
    async fn fill(&mut self, wanted: usize, deadline: Instant) -> Result<(), Broken> {
        // Writes the 100-continue, if one waits, before waiting for the body.
        self.flush().await.map_err(Broken::Gone)?;
        let max = self.limits.max_body_bytes;
        self.read.reserve(wanted.min(max as usize).max(4096));
        match self
            .timer
            .bound(deadline, self.stream.read_buf(&mut self.read))
            .await
        {
            Some(Ok(0)) => Err(Broken::Gone("closed within a request body".into())),
            Some(Ok(_)) => {
                self.moved();
                Ok(())
            }
            Some(Err(err)) => Err(Broken::Gone(err.to_string())),
            None => Err(RequestError::BodyTimeout(self.limits.body_timeout).into()),
        }
    }

    /// Answers a request that could not be read, then closes.
    async fn reject<S: Http1Service>(
        &mut self,
        service: &S,
        method: Option<&Method>,
        error: RequestError,
    ) {
        let response = service.reject(method, error);
        self.write.clear();
        let asked = Asked {
            head: false,
            version: Version::HTTP_11,
        };
        if self.write_response(response, asked, false).await.is_ok() {
            self.linger().await;
        }
    }

    /// Writes `response`: its head and, when whole, its body in one write; a body
    /// still streaming goes out as it comes. Returns whether the connection stays
    /// open for another request.
    async fn write_response<B>(
        &mut self,
        response: Response<B>,
        asked: Asked,
        keep_alive: bool,
    ) -> Result<bool, String>
    where
        B: Body<Data = Bytes, Error: Display> + Unpin,
    {
        let (parts, mut body) = response.into_parts();
        let Shape {
            bodiless,
            chunked,
            length,
            keep_alive,
        } = write_head(
            &mut self.write,
            &parts,
            body.size_hint().exact(),
            asked,
            keep_alive,
        );
        if bodiless {
            drop(body);
            self.flush().await?;
            return Ok(keep_alive);
        }
        let mut sent = 0u64;
        loop {
            let frame = match std::future::poll_fn(|cx| {
                std::task::Poll::Ready(Pin::new(&mut body).poll_frame(cx))
            })
            .await
            {
                std::task::Poll::Ready(frame) => frame,
                std::task::Poll::Pending => {
                    // Nothing more yet: what is buffered goes now.
                    self.flush().await?;
                    let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
                    let deadline = Instant::now() + self.limits.stall_timeout;
                    self.timer.bound(deadline, next).await.ok_or_else(|| {
                        "the response body yielded nothing more within the stall timeout".to_owned()
                    })?
                }
            };
            match frame {
                None => break,
                Some(Err(err)) => return Err(format!("response body failed: {err}")),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    sent += data.len() as u64;
                    if chunked && !data.is_empty() {
                        self.write
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        self.write.extend_from_slice(&data);
                        self.write.extend_from_slice(b"\r\n");
                    } else {
                        self.write.extend_from_slice(&data);
                    }
                    if self.write.len() >= WRITE_HIGH_WATER {
                        self.flush().await?;
                    }
                }
            }
        }
        // The body's source (a proxied stream) is done: given back now, not after
        // the client takes the rest.
        drop(body);
        if chunked {
            self.write.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await?;
        if !chunked && length.is_some_and(|length| length != sent) {
            return Err(format!(
                "response body was {sent} bytes, not the {length:?} announced"
            ));
        }
        Ok(keep_alive)
    }

    /// Writes what is buffered. A client may read slowly, but each wait for it to
    /// take more has the body timeout.
    async fn flush(&mut self) -> Result<(), String> {
        if self.write.is_empty() {
            return Ok(());
        }
        let Self {
            stream,
            write,
            timer,
            limits,
            ..
        } = self;
        match stream {
            Stream::Plain(tcp) => {
                let mut sent = 0;
                while sent < write.len() {
                    match tcp.try_write(&write[sent..]) {
                        Ok(0) => return Err("the client's socket takes no more".into()),
                        Ok(n) => sent += n,
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                            let deadline = Instant::now() + limits.body_timeout;
                            match timer.bound(deadline, tcp.writable()).await {
                                Some(Ok(())) => {}
                                Some(Err(err)) => return Err(err.to_string()),
                                None => return Err("the client took nothing more in time".into()),
                            }
                        }
                        Err(err) => return Err(err.to_string()),
                    }
                }
            }
            // Through the TLS session; bounded as a whole.
            Stream::Tls(tls) => {
                let deadline = Instant::now() + limits.body_timeout;
                let written = async {
                    tls.write_all(write).await?;
                    tls.flush().await
                };
                match timer.bound(deadline, written).await {
                    Some(Ok(())) => {}
                    Some(Err(err)) => return Err(err.to_string()),
                    None => return Err("the client took nothing more in time".into()),
                }
            }
        }
        write.clear();
        self.moved();
        Ok(())
    }

    fn moved(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// Closes the connection's sending side, then reads and drops what the client
    /// still sends for a moment, so that an unread request does not reset the
    /// connection before the client read the answer.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + LINGER;
        let mut sink = [0u8; 4096];
        while let Some(Ok(1..)) = self
            .timer
            .bound(deadline, self.stream.read(&mut sink))
            .await
        {}
    }
}

/// One timer per connection for every deadline it has: moving a deadline later is
/// free, and the timer, when it fires early, is set again to the deadline now due.
/// Deadlines move with each request; the timer fires once per timeout at most.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
}

impl Timer {
    fn new() -> Self {
        let far = Instant::now() + Duration::from_secs(3600);
        Self {
            sleep: Box::pin(tokio::time::sleep_until(far)),
            armed: far,
        }
    }

    /// `work`'s output, or `None` if `deadline` passed first.
    async fn bound<T>(&mut self, deadline: Instant, work: impl Future<Output = T>) -> Option<T> {
        if deadline < self.armed {
            self.sleep.as_mut().reset(deadline);
            self.armed = deadline;
        }
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return Some(out),
                () = self.sleep.as_mut() => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    self.sleep.as_mut().reset(deadline);
                    self.armed = deadline;
                }
            }
        }
    }
}

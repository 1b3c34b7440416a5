//! The router's HTTP/1.1 front: reads each request whole (head and body, bounded
//! in size and in time), hands it to the proxy, and writes the response in one
//! write when it is whole. Clients over HTTP/2 go through hyper's server instead.
//!
//! A request costs one read and one write here, as in hyper's server, but a
//! proxy needs little of what a general server does per request (a body channel
//! to the handler, a dispatch state machine, a timer armed per request): hyper's
//! HTTP/1.1 server spent about 15,600 user-space instructions per proxied
//! request, this front about 9,000 (`scripts/instructions.sh`).

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use ldc_serve::Http1Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::error::RouteError;
use crate::proxy::{Delivery, Proxy, ProxyBody};

/// Largest request head (request line and headers); 431 above.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines a request may have; 431 above.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line of a chunked body, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Response bytes held before they are written while a body still streams.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// How long a closing connection keeps reading (and dropping) what its client
/// still sends, so that the client reads the answer before the reset.
const LINGER: Duration = Duration::from_secs(1);

/// Serves `conn` until its client closes it, a request asks to close it, it breaks
/// a limit, or the listener stops.
pub(crate) async fn serve(proxy: Arc<Proxy>, conn: Http1Connection) {
    let Http1Connection {
        stream,
        peer,
        header_read_timeout,
        mut closing,
    } = conn;
    let limits = proxy.front_limits();
    let mut front = Front {
        stream,
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
        let head = match front
            .read_head(now + header_read_timeout, &mut closing)
            .await
        {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(Broken::Reject(error)) => {
                front.reject(&proxy, None, &error).await;
                return;
            }
            Err(Broken::Gone(cause)) => {
                tracing::debug!(%peer, %cause, "client connection ended");
                return;
            }
        };
        let keep_alive = head.keep_alive && !*closing.borrow();
        if head.expects_continue && head.framing != Framing::Empty {
            front
                .write
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body = match front.read_body(head.framing).await {
            Ok(body) => body,
            Err(Broken::Reject(error)) => {
                front
                    .reject(&proxy, Some(head.request.method()), &error)
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
        let response = proxy
            .answer(head.request.map(|()| body), Delivery::Streamed)
            .await;
        // `closing` may have changed while the request was in the cell.
        let keep_alive = keep_alive && !*closing.borrow();
        let written = front.write_response(response, asked, keep_alive).await;
        now = Instant::now();
        match written {
            Ok(true) => {}
            Ok(false) => {
                front.linger().await;
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
    Reject(RouteError),
    /// The client went away or stalled: nothing to answer.
    Gone(String),
}

/// How a request's body is delimited (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// What of a request shapes its response's framing.
#[derive(Debug, Clone, Copy)]
struct Asked {
    head: bool,
    version: Version,
}

/// A parsed request head and what it says about its connection.
struct Head {
    request: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expects_continue: bool,
}

/// The bounds a client connection is held to, from the deploy file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Time a client gets to send a body, and to take any part of a response.
    pub body_timeout: Duration,
    pub max_body: u64,
    /// Time a cell gets to send the next part of a response it started.
    pub stall_timeout: Duration,
}

struct Front {
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
    timer: Timer,
    limits: Limits,
}

impl Front {
    /// The next request's head, or `None` when the client closed between requests,
    /// stayed silent past `deadline`, or the listener is stopping.
    async fn read_head(
        &mut self,
        deadline: Instant,
        closing: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Head>, Broken> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) = parse_head(&mut self.read)? {
                    return Ok(Some(head));
                }
                if self.read.len() >= MAX_HEAD_BYTES {
                    return Err(Broken::Reject(RouteError::HeadTooLarge(MAX_HEAD_BYTES)));
                }
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
                Some(Ok(_)) => {}
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

    /// The request's body, whole: at most `max_body` bytes, received within the
    /// body timeout.
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
        let max = self.limits.max_body;
        if len > max {
            return Err(Broken::Reject(RouteError::BodyTooLarge(max)));
        }
        let len = len as usize;
        while self.read.len() < len {
            self.fill(len - self.read.len(), deadline, max).await?;
        }
        Ok(self.read.split_to(len).freeze())
    }

    async fn read_chunked(&mut self, deadline: Instant) -> Result<Bytes, Broken> {
        let max = self.limits.max_body;
        let mut body = BytesMut::new();
        loop {
            let size = chunk_size(&self.line(deadline, max).await?)?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > max {
                return Err(Broken::Reject(RouteError::BodyTooLarge(max)));
            }
            let size = size as usize;
            while self.read.len() < size + 2 {
                self.fill(size + 2 - self.read.len(), deadline, max).await?;
            }
            body.extend_from_slice(&self.read[..size]);
            if &self.read[size..size + 2] != b"\r\n" {
                return Err(invalid_body("a chunk does not end with CRLF"));
            }
            let _ = self.read.split_to(size + 2);
        }
        // Trailers, if any, are dropped: the body is sent whole. They count
        // against the head's bound.
        let mut trailers = 0;
        loop {
            let line = self.line(deadline, max).await?;
            if line.is_empty() {
                return Ok(body.freeze());
            }
            trailers += line.len() + 2;
            if trailers > MAX_HEAD_BYTES {
                return Err(Broken::Reject(RouteError::HeadTooLarge(MAX_HEAD_BYTES)));
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

    /// One CRLF-terminated line of a chunked body, without its CRLF.
    async fn line(&mut self, deadline: Instant, max: u64) -> Result<Bytes, Broken> {
        loop {
            if let Some(end) = self.read.windows(2).position(|w| w == b"\r\n") {
                let line = self.read.split_to(end + 2).freeze();
                return Ok(line.slice(..end));
            }
            if self.read.len() > MAX_CHUNK_LINE {
                return Err(invalid_body("a chunk-size line is too long"));
            }
            self.fill(1, deadline, max).await?;
        }
    }

    /// Reads at least once more into the read buffer (`wanted` bytes, or less).
    async fn fill(&mut self, wanted: usize, deadline: Instant, max: u64) -> Result<(), Broken> {
        // Writes the 100-continue, if one waits, before waiting for the body.
        self.flush().await.map_err(Broken::Gone)?;
        self.read.reserve(wanted.min(max as usize).max(4096));
        match self
            .timer
            .bound(deadline, self.stream.read_buf(&mut self.read))
            .await
        {
            Some(Ok(0)) => Err(Broken::Gone("closed within a request body".into())),
            Some(Ok(_)) => Ok(()),
            Some(Err(err)) => Err(Broken::Gone(err.to_string())),
            None => Err(self.body_timed_out()),
        }
    }

    fn body_timed_out(&self) -> Broken {
        Broken::Reject(RouteError::BodyTimeout(
            self.limits.body_timeout.as_millis() as u64,
        ))
    }

    /// Answers a request the front could not take, then closes.
    async fn reject(&mut self, proxy: &Proxy, method: Option<&Method>, error: &RouteError) {
        let response = proxy.reject(method, error);
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
    async fn write_response(
        &mut self,
        response: Response<ProxyBody>,
        asked: Asked,
        keep_alive: bool,
    ) -> Result<bool, String> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        // Their headers go as they are (a HEAD's Content-Length says what a GET
        // would get); their body, if any, is dropped.
        let bodiless = asked.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let length = body
            .size_hint()
            .exact()
            .or_else(|| crate::channel::content_length(&parts.headers));
        let http10 = asked.version == Version::HTTP_10;
        let chunked = !bodiless && length.is_none() && !http10;
        // Without a length, an HTTP/1.0 client learns where the body ends from
        // the close.
        let keep_alive = keep_alive && (bodiless || chunked || length.is_some());
        let w = &mut self.write;
        w.extend_from_slice(b"HTTP/1.1 ");
        w.extend_from_slice(status.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        w.extend_from_slice(b"\r\n");
        let mut dated = false;
        for (name, value) in &parts.headers {
            let framing = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
            if name == header::CONNECTION || (framing && !bodiless) {
                continue;
            }
            dated |= name == header::DATE;
            header_line(w, name.as_str().as_bytes(), value.as_bytes());
        }
        if !dated {
            DATE.with(|date| header_line(w, b"date", &date.now()));
        }
        if chunked {
            header_line(w, b"transfer-encoding", b"chunked");
        } else if let (Some(length), false) = (length, bodiless) {
            header_line(w, b"content-length", decimal(length).as_ref());
        }
        if !keep_alive {
            header_line(w, b"connection", b"close");
        } else if http10 {
            header_line(w, b"connection", b"keep-alive");
        }
        w.extend_from_slice(b"\r\n");
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
                        "the cell sent no more of its response within the request timeout"
                            .to_owned()
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
        // The cell's stream is done: given back now, not after the client takes
        // the rest.
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
        let mut sent = 0;
        while sent < self.write.len() {
            match self.stream.try_write(&self.write[sent..]) {
                Ok(0) => return Err("the client's socket takes no more".into()),
                Ok(n) => sent += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let deadline = Instant::now() + self.limits.body_timeout;
                    match self.timer.bound(deadline, self.stream.writable()).await {
                        Some(Ok(())) => {}
                        Some(Err(err)) => return Err(err.to_string()),
                        None => return Err("the client took nothing more in time".into()),
                    }
                }
                Err(err) => return Err(err.to_string()),
            }
        }
        self.write.clear();
        Ok(())
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

/// Parses a request head from the front of `buf` and takes it out; `None` when
/// the head is not complete yet.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Broken> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(Broken::Reject(RouteError::HeadTooLarge(MAX_HEAD_BYTES)));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Broken::Reject(RouteError::TooManyHeaders(MAX_HEADERS)));
        }
        Err(err) => return Err(bad_request(format!("malformed request head: {err}"))),
    };
    let method = parsed.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| bad_request(format!("invalid method {method:?}")))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where the target and each header sit in the head, so that they can share
    // its bytes once it is taken out of the buffer.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let path = span(parsed.path.unwrap_or_default().as_bytes());
    let spans: Vec<_> = parsed
        .headers
        .iter()
        .map(|line| (span(line.name.as_bytes()), span(line.value)))
        .collect();
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path))
        .map_err(|err| bad_request(format!("invalid request target: {err}")))?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut shape = Shape::default();
    for (name, value) in spans {
        let name = HeaderName::from_bytes(&head[name])
            .map_err(|_| bad_request("invalid header name".into()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| bad_request(format!("invalid value of header {name}")))?;
        if shape.note(&name, &value)? {
            headers.append(name, value);
        }
    }
    if version == Version::HTTP_11 && !shape.host {
        return Err(bad_request(
            "an HTTP/1.1 request needs a Host header".into(),
        ));
    }
    let framing = shape.framing(version)?;
    let keep_alive = match version {
        Version::HTTP_10 => shape.keep_alive && !shape.close,
        _ => !shape.close,
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expects_continue: shape.expects_continue && version == Version::HTTP_11,
    }))
}

/// What a request's headers say about its body and its connection, gathered in
/// the one pass that builds its header map.
#[derive(Debug, Default)]
struct Shape {
    length: Option<u64>,
    /// `Transfer-Encoding` was present, and whether it is `chunked` alone: the
    /// body is sent on decoded, so no other coding can be passed through.
    encoded: Option<bool>,
    host: bool,
    close: bool,
    keep_alive: bool,
    expects_continue: bool,
}

impl Shape {
    /// Notes one header line; returns whether it goes on to the cell (`Expect` is
    /// answered here, and the cell gets the body whole, so no
    /// `Transfer-Encoding` either).
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<bool, Broken> {
        let bytes = value.as_bytes();
        if name == header::CONTENT_LENGTH {
            let length = std::str::from_utf8(bytes)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad_request("invalid Content-Length".into()))?;
            if self.length.is_some_and(|seen| seen != length) {
                return Err(bad_request("Content-Length values disagree".into()));
            }
            self.length = Some(length);
        } else if name == header::TRANSFER_ENCODING {
            let chunked = bytes.trim_ascii().eq_ignore_ascii_case(b"chunked");
            self.encoded = Some(self.encoded.is_none() && chunked);
            return Ok(false);
        } else if name == header::HOST {
            self.host = true;
        } else if name == header::CONNECTION {
            for token in bytes.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            self.expects_continue = bytes.eq_ignore_ascii_case(b"100-continue");
            return Ok(false);
        }
        Ok(true)
    }

    /// The body's framing. Requests that could be read two ways (both
    /// `Transfer-Encoding` and `Content-Length`) are refused, as a proxy that read
    /// them one way might pass on a second, smuggled request.
    fn framing(&self, version: Version) -> Result<Framing, Broken> {
        match (self.encoded, self.length) {
            (Some(_), Some(_)) => Err(bad_request(
                "Transfer-Encoding and Content-Length together".into(),
            )),
            (Some(_), None) if version == Version::HTTP_10 => Err(bad_request(
                "Transfer-Encoding in an HTTP/1.0 request".into(),
            )),
            (Some(true), None) => Ok(Framing::Chunked),
            (Some(false), None) => Err(bad_request(
                "the only Transfer-Encoding taken is chunked".into(),
            )),
            (None, None | Some(0)) => Ok(Framing::Empty),
            (None, Some(length)) => Ok(Framing::Length(length)),
        }
    }
}

/// The size in a chunk-size line: hex digits, then nothing or extensions (which
/// start with `;` and hold no control characters: a bare LF read as a line end
/// by another server would frame the body differently).
fn chunk_size(line: &[u8]) -> Result<u64, Broken> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';')
        || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(invalid_body("invalid chunk extension"));
    }
    std::str::from_utf8(&line[..digits])
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 15)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or_else(|| invalid_body("invalid chunk size"))
}

fn bad_request(message: String) -> Broken {
    Broken::Reject(RouteError::BadRequest(message))
}

fn invalid_body(message: &str) -> Broken {
    Broken::Reject(RouteError::InvalidBody(message.into()))
}

fn header_line(w: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    w.extend_from_slice(name);
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

/// `n` in decimal digits, without an allocation.
fn decimal(mut n: u64) -> impl AsRef<[u8]> {
    struct Digits([u8; 20], usize);
    impl AsRef<[u8]> for Digits {
        fn as_ref(&self) -> &[u8] {
            &self.0[self.1..]
        }
    }
    let mut digits = Digits([0; 20], 20);
    loop {
        digits.1 -= 1;
        digits.0[digits.1] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return digits;
        }
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

/// The `Date` header's value, formatted once a second per thread.
struct DateCache(std::cell::Cell<(u64, [u8; 29])>);

thread_local! {
    static DATE: DateCache = const { DateCache(std::cell::Cell::new((0, [b' '; 29]))) };
}

impl DateCache {
    fn now(&self) -> [u8; 29] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (cached, text) = self.0.get();
        if cached == second {
            return text;
        }
        let mut text = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        let n = formatted.len().min(29);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        self.0.set((second, text));
        text
    }
}

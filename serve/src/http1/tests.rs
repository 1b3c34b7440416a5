//! Requests read back from bytes cut at arbitrary points, and a connection served
//! end to end over a socket.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::Full;
use proptest::collection::vec;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::testing::{Message, message, reads};

/// The requests in `pieces`, read as a connection reads them: one piece at a
/// time, each head as soon as it is whole, then its body.
fn requests(pieces: &[&[u8]]) -> Result<Vec<Request<Bytes>>, RequestError> {
    let mut buf = BytesMut::new();
    let mut read = Vec::new();
    let mut reading: Option<(Head, ChunkedDecoder)> = None;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let Some((head, decoder)) = reading.as_mut() else {
                match parse_head(&mut buf)? {
                    Some(head) => reading = Some((head, ChunkedDecoder::new(u64::MAX))),
                    None => break,
                }
                continue;
            };
            let body = match head.framing {
                Framing::Empty => Bytes::new(),
                Framing::Length(len) if buf.len() as u64 >= len => {
                    buf.split_to(len as usize).freeze()
                }
                Framing::Length(_) => break,
                Framing::Chunked => match decoder.decode(&mut buf)? {
                    Decoded::Body(body) => body,
                    Decoded::Need(_) => break,
                },
            };
            if let Some((head, _)) = reading.take() {
                read.push(head.request.map(|()| body));
            }
        }
    }
    Ok(read)
}

/// The headers `message` arrives with: as sent, less its `Transfer-Encoding`.
fn headers_of(message: &Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.append(header::HOST, HeaderValue::from_static("example"));
    for (name, value) in &message.headers {
        let name = header::HeaderName::try_from(name.as_str()).expect("a generated name");
        let value = HeaderValue::try_from(value.as_str()).expect("a generated value");
        headers.append(name, value);
    }
    if message.chunks.is_none() && !message.body.is_empty() {
        headers.append(header::CONTENT_LENGTH, message.body.len().into());
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Pipelined requests, their bytes cut across reads at arbitrary points,
    /// read back as they were sent: method, target, headers and body.
    #[test]
    fn requests_cut_anywhere_read_back_as_sent(
        messages in vec(message(), 1..4),
        cuts in vec(any::<usize>(), 0..10),
    ) {
        let bytes: Vec<u8> = messages.iter().flat_map(Message::encode).collect();
        let read = requests(&reads(&bytes, &cuts)).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(read.len(), messages.len());
        for (request, message) in read.iter().zip(&messages) {
            prop_assert_eq!(request.method().as_str(), message.method.as_str());
            prop_assert_eq!(request.uri().to_string(), message.target.as_str());
            prop_assert_eq!(request.headers(), &headers_of(message));
            prop_assert_eq!(&request.body()[..], &message.body[..]);
        }
    }
}

/// Answers each request with what it asked and the size of its body; a refused
/// one with 400 and why.
struct Echo;

impl Http1Service for Echo {
    type Body = Full<Bytes>;

    async fn answer(&self, req: Request<Bytes>) -> Response<Full<Bytes>> {
        let text = format!("{} {} {}", req.method(), req.uri(), req.body().len());
        Response::new(Full::new(Bytes::from(text)))
    }

    fn reject(&self, _: Option<&Method>, error: RequestError) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(error.to_string())));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response
    }
}

/// A client connected to an [`Echo`] served by [`serve_http1`], and the sender
/// of the listener's drain signal.
async fn connect() -> (TcpStream, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("local address");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (stream, peer) = listener.accept().await.expect("accept");
    let (closing, closing_rx) = watch::channel(false);
    let conn = Http1Connection {
        stream: Stream::Plain(stream),
        peer,
        identity: None,
        moved: Arc::default(),
        header_read_timeout: Duration::from_secs(10),
        closing: closing_rx,
        limits: Http1Limits {
            body_timeout: Duration::from_secs(10),
            max_body_bytes: 1024,
            stall_timeout: Duration::from_secs(10),
        },
    };
    tokio::spawn(serve_http1(Arc::new(Echo), conn));
    (client, closing)
}

/// Everything the server sends until it closes the connection, within `within`.
async fn read_to_close(client: &mut TcpStream, within: Duration) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(within, client.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8(answer).expect("text")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (mut client, _closing) = connect().await;
    client
        .write_all(
            b"POST /one HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /two HTTP/1.1\r\nHost: a\r\n\r\n\
              PUT /three HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxy",
        )
        .await
        .expect("write");
    let answer = read_to_close(&mut client, Duration::from_secs(10)).await;
    let bodies: Vec<&str> = answer
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|response| response.split("\r\n\r\n").nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        bodies,
        ["POST /one 3", "GET /two 0", "PUT /three 2"],
        "{answer}"
    );
    assert!(answer.contains("content-length: 11\r\n"), "{answer}");
    assert!(answer.contains("date: "), "{answer}");
    assert!(
        answer.ends_with("connection: close\r\n\r\nPUT /three 2"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_request_framed_two_ways_is_refused_and_its_connection_closed() {
    let (mut client, _closing) = connect().await;
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
    let answer = read_to_close(&mut client, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("Transfer-Encoding and Content-Length together"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_body_over_the_bound_is_refused_before_it_is_sent() {
    let (mut client, _closing) = connect().await;
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut client, Duration::from_secs(10)).await;
    assert!(
        answer.ends_with("request body is larger than 1024 bytes"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_idle_connection_closes_when_the_listener_stops() {
    let (mut client, closing) = connect().await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 17];
    client.read_exact(&mut first).await.expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");
    closing.send_replace(true);
    // Well inside the 10 s header read timeout, which would close it too.
    let rest = read_to_close(&mut client, Duration::from_secs(2)).await;
    assert!(rest.ends_with("GET / 0"), "{rest}");
}

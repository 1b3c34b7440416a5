//! The request head parser's framing rules, one case each, and what it does with
//! arbitrary bytes.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

fn parse(text: &str) -> Result<Option<Head>, HeadError> {
    parse_head(&mut BytesMut::from(text.as_bytes()))
}

fn head(text: &str) -> Head {
    match parse(text) {
        Ok(Some(head)) => head,
        other => panic!("{text:?} should parse, got {other:?}"),
    }
}

fn refused(text: &str) -> HeadError {
    match parse(text) {
        Err(error) => error,
        other => panic!("{text:?} should be refused, got {other:?}"),
    }
}

#[test]
fn framing_follows_the_headers() {
    let cases = [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Framing::Empty),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            Framing::Empty,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n",
            Framing::Length(12),
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n",
            Framing::Length(7),
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            Framing::Chunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  CHUNKED \r\n\r\n",
            Framing::Chunked,
        ),
        (
            "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
            Framing::Length(3),
        ),
    ];
    for (text, framing) in cases {
        assert_eq!(head(text).framing, framing, "{text:?}");
    }
}

#[test]
fn requests_that_could_be_framed_two_ways_are_refused() {
    let cases = [
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding and Content-Length together",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            "Transfer-Encoding and Content-Length together",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "Content-Length values disagree",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            "invalid Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "the only Transfer-Encoding taken is chunked",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "the only Transfer-Encoding taken is chunked",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "the only Transfer-Encoding taken is chunked",
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
        (
            "GET / HTTP/1.1\r\n\r\n",
            "an HTTP/1.1 request needs a Host header",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(refused(text).to_string(), message, "{text:?}");
    }
}

#[test]
fn obs_fold_and_malformed_lines_are_refused() {
    for text in [
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Bad\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Bad : 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\rb\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(matches!(refused(text), HeadError::Malformed(_)), "{text:?}");
    }
}

#[test]
fn header_count_is_bounded() {
    let with = |lines: usize| {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 1..lines {
            text.push_str(&format!("X-{i}: {i}\r\n"));
        }
        text + "\r\n"
    };
    assert_eq!(
        head(&with(MAX_HEADERS)).request.headers().len(),
        MAX_HEADERS
    );
    assert!(matches!(
        refused(&with(MAX_HEADERS + 1)),
        HeadError::TooManyHeaders(MAX_HEADERS)
    ));
}

#[test]
fn head_size_is_bounded_whole_or_in_part() {
    let value = "v".repeat(MAX_HEAD_BYTES);
    let whole = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {value}\r\n\r\n");
    assert!(matches!(
        refused(&whole),
        HeadError::TooLarge(MAX_HEAD_BYTES)
    ));
    // No end in sight yet, but the bound is reached: no point waiting for more.
    let partial = &whole[..MAX_HEAD_BYTES];
    assert!(matches!(
        refused(partial),
        HeadError::TooLarge(MAX_HEAD_BYTES)
    ));
    let target = "a".repeat(MAX_HEAD_BYTES);
    let long_line = format!("GET /{target} HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(matches!(
        refused(&long_line),
        HeadError::TooLarge(MAX_HEAD_BYTES)
    ));
    // Just under the bound, a head keeps waiting for its end.
    assert!(matches!(parse(&whole[..MAX_HEAD_BYTES - 1]), Ok(None)));
}

#[test]
fn an_incomplete_head_waits_and_leaves_the_buffer_alone() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
    assert!(matches!(parse_head(&mut buf), Ok(None)));
    assert_eq!(&buf[..], b"GET / HTTP/1.1\r\nHost: a\r\n");
}

#[test]
fn two_requests_in_one_buffer_parse_as_two() {
    let mut buf = BytesMut::from(
        &b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /c"[..],
    );
    let first = parse_head(&mut buf).ok().flatten().expect("the first head");
    assert_eq!(first.request.uri(), "/a");
    assert_eq!(first.framing, Framing::Length(3));
    // The body stays for the connection to read.
    assert_eq!(&buf[..3], b"abc");
    let _ = buf.split_to(3);
    let second = parse_head(&mut buf)
        .ok()
        .flatten()
        .expect("the second head");
    assert_eq!(second.request.method(), Method::GET);
    assert_eq!(second.request.uri(), "/b?x=1");
    assert_eq!(&buf[..], b"GET /c");
    assert!(matches!(parse_head(&mut buf), Ok(None)));
}

#[test]
fn connection_headers_decide_keep_alive() {
    let cases = [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, Close\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
    ];
    for (text, keep_alive) in cases {
        assert_eq!(head(text).keep_alive, keep_alive, "{text:?}");
    }
}

#[test]
fn expect_and_transfer_encoding_are_answered_here_not_passed_on() {
    let chunked = head(
        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nX-Kept: 1\r\n\r\n",
    );
    assert!(chunked.expects_continue);
    let names: Vec<&str> = chunked
        .request
        .headers()
        .keys()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, ["host", "x-kept"]);
    // HTTP/1.0 has no 100 Continue.
    let http10 = head("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
    assert!(!http10.expects_continue);
}

#[test]
fn the_head_is_taken_as_sent() {
    let head = head("PURGE /p/q?r=s HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n");
    assert_eq!(head.request.method().as_str(), "PURGE");
    assert_eq!(head.request.uri(), "/p/q?r=s");
    assert_eq!(head.request.version(), Version::HTTP_11);
    let values: Vec<_> = head.request.headers().get_all("x-two").iter().collect();
    assert_eq!(values, ["1", "2"]);
}

/// Bytes that look like a request head now and then: a random prefix of one,
/// followed by noise.
fn head_like() -> impl Strategy<Value = Vec<u8>> {
    let sample = b"POST /a?b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    (
        0..=sample.len(),
        proptest::collection::vec(any::<u8>(), 0..96),
    )
        .prop_map(move |(keep, noise)| [&sample[..keep], &noise[..]].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever arrives, the parser answers with a head, a wait or a typed
    /// error, and never panics; a wait leaves the bytes for the next read.
    #[test]
    fn arbitrary_bytes_parse_wait_or_are_refused(
        bytes in prop_oneof![head_like(), proptest::collection::vec(any::<u8>(), 0..256)],
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        match parse_head(&mut buf) {
            Ok(Some(_)) => prop_assert!(buf.len() < bytes.len()),
            Ok(None) => prop_assert_eq!(&buf[..], &bytes[..]),
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }
}

//! HTTP/1.1 request heads parsed from bytes, held to the framing rules that keep a
//! proxy and the server behind it from reading one request two ways.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::InvalidUri;
use http::{Method, Request, Uri, Version};

/// Largest request head (request line and headers); 431 above.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines a request may have; 431 above.
pub const MAX_HEADERS: usize = 100;

/// How a request's body is delimited (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head and what it says about its connection.
#[derive(Debug)]
pub struct Head {
    /// Without `Transfer-Encoding` and `Expect`: the body is passed on whole, and
    /// a `100 Continue` is answered by the connection itself.
    pub request: Request<()>,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expects_continue: bool,
}

/// Why a request head was refused. The first two are 431s, the rest 400s.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("request head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request has more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    #[error("invalid method {0:?}")]
    InvalidMethod(String),
    #[error("invalid request target: {0}")]
    InvalidTarget(InvalidUri),
    #[error("invalid header name")]
    InvalidHeaderName,
    #[error("invalid value of header {0}")]
    InvalidHeaderValue(HeaderName),
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("Content-Length values disagree")]
    ContentLengthsDisagree,
    #[error("an HTTP/1.1 request needs a Host header")]
    MissingHost,
    #[error("Transfer-Encoding and Content-Length together")]
    LengthAndEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    EncodingInHttp10,
    #[error("the only Transfer-Encoding taken is chunked")]
    UnsupportedEncoding,
}

/// Parses a request head from the front of `buf` and takes it out, leaving what
/// follows it (its body, or a pipelined request); `None` when the head is not
/// complete yet and may still fit.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge(MAX_HEAD_BYTES));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge(MAX_HEAD_BYTES));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders(MAX_HEADERS));
        }
        Err(err) => return Err(HeadError::Malformed(err)),
    };
    let method = parsed.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::InvalidMethod(method.to_owned()))?;
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
    let uri = Uri::from_maybe_shared(head.slice(path)).map_err(HeadError::InvalidTarget)?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut shape = Shape::default();
    for (name, value) in spans {
        let name = HeaderName::from_bytes(&head[name]).map_err(|_| HeadError::InvalidHeaderName)?;
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(value)) else {
            return Err(HeadError::InvalidHeaderValue(name));
        };
        if shape.note(&name, &value)? {
            headers.append(name, value);
        }
    }
    if version == Version::HTTP_11 && !shape.host {
        return Err(HeadError::MissingHost);
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
    /// Notes one header line; returns whether it stays in the request (`Expect`
    /// is answered by the connection, and the body is passed on whole, so no
    /// `Transfer-Encoding` either).
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<bool, HeadError> {
        let bytes = value.as_bytes();
        if name == header::CONTENT_LENGTH {
            let length = std::str::from_utf8(bytes)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError::InvalidContentLength)?;
            if self.length.is_some_and(|seen| seen != length) {
                return Err(HeadError::ContentLengthsDisagree);
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
    fn framing(&self, version: Version) -> Result<Framing, HeadError> {
        match (self.encoded, self.length) {
            (Some(_), Some(_)) => Err(HeadError::LengthAndEncoding),
            (Some(_), None) if version == Version::HTTP_10 => Err(HeadError::EncodingInHttp10),
            (Some(true), None) => Ok(Framing::Chunked),
            (Some(false), None) => Err(HeadError::UnsupportedEncoding),
            (None, None | Some(0)) => Ok(Framing::Empty),
            (None, Some(length)) => Ok(Framing::Length(length)),
        }
    }
}

#[cfg(test)]
mod tests;

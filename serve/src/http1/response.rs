//! HTTP/1.1 response heads written as bytes: the framing a response takes from
//! its request and its body, and a `Date` formatted once a second.

use std::time::SystemTime;

use http::header;
use http::response::Parts;
use http::{StatusCode, Version};

use crate::body::content_length;

/// What of a request shapes its response's framing.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub head: bool,
    pub version: Version,
}

/// How a response's body goes out after its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// None of its body goes out: it answers a HEAD, or is a 1xx, 204 or 304.
    pub bodiless: bool,
    pub chunked: bool,
    /// Announced in the head; the body must be this long.
    pub length: Option<u64>,
    /// Whether the connection takes another request after this response.
    pub keep_alive: bool,
}

/// Writes the head of the response `parts` to what `asked` into `w`; `size` is
/// its body's exact size when known. `keep_alive` is whether the connection may
/// stay open, as far as the request and the listener go.
pub fn write_head(
    w: &mut Vec<u8>,
    parts: &Parts,
    size: Option<u64>,
    asked: Asked,
    keep_alive: bool,
) -> Shape {
    let status = parts.status;
    // Their headers go as they are (a HEAD's Content-Length says what a GET
    // would get); their body, if any, is dropped.
    let bodiless = asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = size.or_else(|| content_length(&parts.headers));
    let http10 = asked.version == Version::HTTP_10;
    let chunked = !bodiless && length.is_none() && !http10;
    // Without a length, an HTTP/1.0 client learns where the body ends from
    // the close.
    let keep_alive = keep_alive && (bodiless || chunked || length.is_some());
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
    Shape {
        bodiless,
        chunked,
        length,
        keep_alive,
    }
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

#[cfg(test)]
mod tests;

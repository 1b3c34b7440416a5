//! Generated HTTP/1.1 messages and their encodings, for the property tests of
//! the HTTP/1.1 parser.

use proptest::collection::vec;
use proptest::prelude::*;

/// A request as a client means it, before encoding.
#[derive(Debug, Clone)]
pub struct Message {
    pub method: String,
    pub target: String,
    /// Besides `Host`, which is always sent first, and the framing header.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent chunked, cut into chunks at these offsets; else with a length.
    pub chunks: Option<Vec<usize>>,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: example\r\n",
            self.method, self.target
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        match &self.chunks {
            Some(_) => out.push_str("transfer-encoding: chunked\r\n\r\n"),
            None if self.body.is_empty() => out.push_str("\r\n"),
            None => out.push_str(&format!("content-length: {}\r\n\r\n", self.body.len())),
        }
        let mut out = out.into_bytes();
        match &self.chunks {
            Some(cuts) => out.extend(chunked(&self.body, cuts, &[])),
            None => out.extend(&self.body),
        }
        out
    }
}

/// `body` as a chunked body cut at `cuts` (offsets, in any order, out-of-range
/// ones ignored), ending with `trailers`.
pub fn chunked(body: &[u8], cuts: &[usize], trailers: &[(String, String)]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut.min(body.len())).collect();
    cuts.extend([0, body.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    for piece in cuts.windows(2) {
        let chunk = &body[piece[0]..piece[1]];
        out.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend(chunk);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n");
    for (name, value) in trailers {
        out.extend(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend(b"\r\n");
    out
}

/// `bytes` cut at `cuts` (offsets, in any order) into the reads a connection
/// might make of them.
pub fn reads<'b>(bytes: &'b [u8], cuts: &[usize]) -> Vec<&'b [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut % (bytes.len() + 1)).collect();
    cuts.extend([0, bytes.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|piece| &bytes[piece[0]..piece[1]])
        .collect()
}

/// A header name none of the framing rules looks at.
fn plain_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,15}".prop_filter("a header with a framing meaning", |name| {
        ![
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "expect",
        ]
        .contains(&name.as_str())
    })
}

/// A header field: visible characters with inner spaces, as a client sends them.
pub fn field() -> impl Strategy<Value = (String, String)> {
    (plain_name(), "[!-~]([ -~]{0,30}[!-~])?")
}

pub fn message() -> impl Strategy<Value = Message> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("DELETE"),
        Just("PATCH"),
        Just("HEAD"),
        Just("PURGE"),
    ];
    let target = "/[a-zA-Z0-9/._~-]{0,24}(\\?[a-z0-9=&]{0,16})?";
    let chunks = proptest::option::of(vec(0usize..64, 0..4));
    (
        method,
        target,
        vec(field(), 0..6),
        vec(any::<u8>(), 0..64),
        chunks,
    )
        .prop_map(|(method, target, headers, body, chunks)| Message {
            method: method.to_owned(),
            target,
            headers,
            body,
            chunks,
        })
}

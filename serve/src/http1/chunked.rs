//! Chunked request bodies (RFC 9112 section 7.1), decoded from bytes as they
//! arrive into the body whole; trailers are bounded and dropped.

use bytes::{Buf, Bytes, BytesMut};

use super::parse::MAX_HEAD_BYTES;

/// Longest chunk-size line of a chunked body, extensions included; trailer lines
/// have the same bound.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Why a chunked body was refused. `TooLarge` is a 413, `TrailersTooLarge` a
/// 431, the rest 400s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("a chunk-size line is too long")]
    LineTooLong,
    #[error("invalid chunk extension")]
    InvalidExtension,
    #[error("invalid chunk size")]
    InvalidSize,
    #[error("a chunk does not end with CRLF")]
    MissingCrlf,
    #[error("request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("trailers are larger than {0} bytes")]
    TrailersTooLarge(usize),
}

/// What [`ChunkedDecoder::decode`] made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The body, whole; what followed it stays in the buffer.
    Body(Bytes),
    /// At least this many more bytes are needed (fewer may still do).
    Need(usize),
}

/// Decodes one chunked body, at most `max_body` bytes of it, from bytes given
/// in pieces of any size.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    body: BytesMut,
    trailers: usize,
    max_body: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Size,
    /// A chunk of this size, then its CRLF; taken once all of it is buffered.
    Data(usize),
    Trailers,
}

impl ChunkedDecoder {
    pub fn new(max_body: u64) -> Self {
        Self {
            state: State::Size,
            body: BytesMut::new(),
            trailers: 0,
            max_body,
        }
    }

    /// Takes what it can of the body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(Decoded::Need(1));
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    if size == 0 {
                        self.state = State::Trailers;
                    } else if self.body.len() as u64 + size > self.max_body {
                        return Err(ChunkError::TooLarge(self.max_body));
                    } else {
                        self.state = State::Data(size as usize);
                    }
                }
                State::Data(size) => {
                    if buf.len() < size + 2 {
                        return Ok(Decoded::Need(size + 2 - buf.len()));
                    }
                    if &buf[size..size + 2] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.body.extend_from_slice(&buf[..size]);
                    buf.advance(size + 2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(Decoded::Need(1));
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        return Ok(Decoded::Body(std::mem::take(&mut self.body).freeze()));
                    }
                    // They count against the head's bound, as more header lines.
                    self.trailers += end + 2;
                    if self.trailers > MAX_HEAD_BYTES {
                        return Err(ChunkError::TrailersTooLarge(MAX_HEAD_BYTES));
                    }
                }
            }
        }
    }
}

/// Where the line at the front of `buf` ends (its CRLF), once it is buffered. A
/// line is at most [`MAX_CHUNK_LINE`] bytes before its CRLF, whether it arrives
/// in pieces or whole, and only that much of `buf` is searched.
fn line_end(buf: &[u8]) -> Result<Option<usize>, ChunkError> {
    let bound = MAX_CHUNK_LINE + 2;
    match buf[..buf.len().min(bound)]
        .windows(2)
        .position(|w| w == b"\r\n")
    {
        Some(end) => Ok(Some(end)),
        None if buf.len() >= bound => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// The size in a chunk-size line: hex digits, then nothing or extensions (which
/// start with `;` and hold no control characters: a bare LF read as a line end
/// by another server would frame the body differently).
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';')
        || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(ChunkError::InvalidExtension);
    }
    std::str::from_utf8(&line[..digits])
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 15)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or(ChunkError::InvalidSize)
}

#[cfg(test)]
mod tests;

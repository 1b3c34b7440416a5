//! Request bodies read whole within a size bound, and the length a message
//! declares.

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;

/// Why a body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Declared or found larger than the bound (which it carries).
    #[error("body is larger than {0} bytes")]
    TooLarge(u64),
    /// The body failed while being read, e.g. its stream was reset.
    #[error("cannot read the body: {0}")]
    Unreadable(String),
}

/// A message's declared `Content-Length`, when it has a valid one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `body` whole, at most `max` bytes of it; refused at once when `declared_len`
/// (its `Content-Length`) is over `max` already. A body that arrives in one
/// frame, as most do, is returned as that frame, without a copy.
pub async fn read_bounded<B>(
    body: B,
    declared_len: Option<u64>,
    max: u64,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if declared_len.is_some_and(|len| len > max) {
        return Err(BodyError::TooLarge(max));
    }
    let unreadable = |err: Box<dyn std::error::Error + Send + Sync>| {
        if err.is::<LengthLimitError>() {
            BodyError::TooLarge(max)
        } else {
            BodyError::Unreadable(err.to_string())
        }
    };
    let mut body = std::pin::pin!(Limited::new(
        body,
        usize::try_from(max).unwrap_or(usize::MAX)
    ));
    let first = match body.as_mut().frame().await {
        Some(frame) => frame.map_err(unreadable)?.into_data().unwrap_or_default(),
        None => return Ok(Bytes::new()),
    };
    if body.is_end_stream() {
        return Ok(first);
    }
    // Boxed: bodies of several frames are rare, and the collection would
    // otherwise widen the future of every read.
    let rest = Box::pin(body.collect())
        .await
        .map_err(unreadable)?
        .to_bytes();
    Ok([first, rest].concat().into())
}

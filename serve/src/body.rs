//! Request bodies read whole within a size bound, and the length a message
//! declares.

use bytes::{Bytes, BytesMut};
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
    // More frames: copied once into one buffer, and only if one holds data (an
    // HTTP/2 client may end the stream with an empty frame after the whole body).
    let mut whole: Option<BytesMut> = None;
    while let Some(frame) = body.as_mut().frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let whole = whole.get_or_insert_with(|| {
            let expected = declared_len.map_or(2 * first.len(), |len| len as usize);
            let mut whole = BytesMut::with_capacity(expected.max(first.len() + data.len()));
            whole.extend_from_slice(&first);
            whole
        });
        whole.extend_from_slice(&data);
    }
    Ok(whole.map_or(first, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http::HeaderValue;
    use hyper::body::Frame;

    use super::*;

    /// A body arriving in the given frames, or failing where one is an error.
    struct Frames(VecDeque<Result<Bytes, &'static str>>);

    impl Frames {
        fn of(frames: impl IntoIterator<Item = Result<&'static [u8], &'static str>>) -> Self {
            Self(
                frames
                    .into_iter()
                    .map(|f| f.map(Bytes::from_static))
                    .collect(),
            )
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front().map(|frame| frame.map(Frame::data)))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    #[tokio::test]
    async fn a_body_is_read_whole_up_to_its_bound() {
        let one = Bytes::from_static(b"one frame");
        let read = read_bounded(Frames(VecDeque::from([Ok(one.clone())])), None, 9).await;
        // Taken as it came: the same bytes, not a copy.
        assert_eq!(read.as_deref().map(<[u8]>::as_ptr), Ok(one.as_ptr()));
        // The data, then an empty frame that ends the stream: still no copy.
        let ended = Frames(VecDeque::from([Ok(one.clone()), Ok(Bytes::new())]));
        let read = read_bounded(ended, None, 9).await;
        assert_eq!(read.as_deref().map(<[u8]>::as_ptr), Ok(one.as_ptr()));
        let three = Frames::of([Ok(&b"ab"[..]), Ok(b""), Ok(b"cd")]);
        assert_eq!(
            read_bounded(three, Some(4), 4).await,
            Ok(Bytes::from_static(b"abcd"))
        );
        assert_eq!(
            read_bounded(Frames::of([]), None, 0).await,
            Ok(Bytes::new())
        );
    }

    #[tokio::test]
    async fn a_body_over_its_bound_is_refused_declared_or_found() {
        let small = || Frames::of([Ok(&b"ab"[..])]);
        assert_eq!(
            read_bounded(small(), Some(5), 4).await,
            Err(BodyError::TooLarge(4))
        );
        let over = Frames::of([Ok(&b"abc"[..]), Ok(b"de")]);
        assert_eq!(
            read_bounded(over, None, 4).await,
            Err(BodyError::TooLarge(4))
        );
        let first_over = Frames::of([Ok(&b"abcde"[..])]);
        assert_eq!(
            read_bounded(first_over, Some(1), 4).await,
            Err(BodyError::TooLarge(4))
        );
    }

    #[tokio::test]
    async fn a_failing_body_says_why() {
        for frames in [
            Frames::of([Err("stream reset")]),
            Frames::of([Ok(&b"ab"[..]), Err("stream reset")]),
        ] {
            let error = read_bounded(frames, None, 64).await;
            assert_eq!(error, Err(BodyError::Unreadable("stream reset".into())));
            let message = error.map_err(|err| err.to_string());
            assert_eq!(message, Err("cannot read the body: stream reset".into()));
        }
    }

    /// Checked at compile time, for every body that can be sent between threads.
    #[test]
    fn the_reading_can_be_spawned_when_its_body_can() {
        fn spawnable(_: impl Future + Send + 'static) {}
        fn any_body<B>(body: B)
        where
            B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
                + Send
                + 'static,
        {
            spawnable(read_bounded(body, None, 1));
        }
        any_body(Frames::of([]));
    }

    #[test]
    fn only_a_valid_content_length_is_taken() {
        let length = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static(value));
            content_length(&headers)
        };
        assert_eq!(length("42"), Some(42));
        assert_eq!(length("-1"), None);
        assert_eq!(length("4 2"), None);
        assert_eq!(content_length(&HeaderMap::new()), None);
    }
}

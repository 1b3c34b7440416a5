//! The chunked body decoder's rules, one case each, and its answers to bodies
//! and bytes cut across reads at arbitrary points.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::testing::{chunked, field, reads};

/// Feeds `pieces` one by one, as reads would bring them, until the decoder
/// answers with a body or an error (`Ok(None)` when it still needs more); with
/// the bytes it left, read or not.
fn decode(max_body: u64, pieces: &[&[u8]]) -> (Result<Option<Bytes>, ChunkError>, Vec<u8>) {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut buf = BytesMut::new();
    for (read, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        let answer = match decoder.decode(&mut buf) {
            Ok(Decoded::Need(n)) => {
                assert!(n > 0, "a wait for nothing");
                continue;
            }
            Ok(Decoded::Body(body)) => Ok(Some(body)),
            Err(error) => Err(error),
        };
        return (answer, [&buf[..], &pieces[read + 1..].concat()].concat());
    }
    (Ok(None), buf.to_vec())
}

fn whole(text: &str) -> Result<Option<Bytes>, ChunkError> {
    decode(64, &[text.as_bytes()]).0
}

#[test]
fn bodies_and_what_follows_them() {
    let cases: [(&str, &[u8]); 6] = [
        ("0\r\n\r\n", b""),
        ("5\r\nhello\r\n0\r\n\r\n", b"hello"),
        ("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
        ("A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        ("5;name=value\r\nhello\r\n0 ; last\r\n\r\n", b"hello"),
        ("5\r\nhello\r\n0\r\nX-Trailer: dropped\r\n\r\n", b"hello"),
    ];
    for (text, body) in cases {
        let (decoded, rest) = decode(64, &[text.as_bytes(), b"GET /next"]);
        assert_eq!(decoded, Ok(Some(Bytes::from_static(body))), "{text:?}");
        assert_eq!(rest, b"GET /next", "{text:?}");
    }
}

#[test]
fn bad_chunk_sizes_are_refused() {
    let cases = [
        ("\r\n", ChunkError::InvalidSize),
        ("zz\r\n", ChunkError::InvalidExtension),
        (";ext\r\n", ChunkError::InvalidSize),
        ("-5\r\n", ChunkError::InvalidExtension),
        ("0x5\r\n", ChunkError::InvalidExtension),
        ("1000000000000000\r\n", ChunkError::InvalidSize),
        ("5 x\r\n", ChunkError::InvalidExtension),
        ("5;a\x01b\r\n", ChunkError::InvalidExtension),
        ("5;a\nb\r\n", ChunkError::InvalidExtension),
        ("5;a\x7fb\r\n", ChunkError::InvalidExtension),
        ("5\r\nhelloXY0\r\n\r\n", ChunkError::MissingCrlf),
    ];
    for (text, error) in cases {
        assert_eq!(whole(text), Err(error), "{text:?}");
    }
    // A tab is no control character here; 15 hex digits are still a size.
    assert_eq!(whole("0;\tx\r\n\r\n"), Ok(Some(Bytes::new())));
    assert_eq!(whole("fffffffffffffff\r\n"), Err(ChunkError::TooLarge(64)));
}

#[test]
fn the_body_is_bounded_before_its_chunk_is_read() {
    assert_eq!(
        whole("20\r\n"),
        Ok(None),
        "32 bytes of a bound of 64 may come"
    );
    let at_bound = format!("40\r\n{}\r\n0\r\n\r\n", "x".repeat(64));
    assert_eq!(whole(&at_bound).map(|b| b.map(|b| b.len())), Ok(Some(64)));
    let over = format!("40\r\n{}\r\n1\r\n", "x".repeat(64));
    assert_eq!(whole(&over), Err(ChunkError::TooLarge(64)));
    assert_eq!(whole("41\r\n"), Err(ChunkError::TooLarge(64)));
}

#[test]
fn lines_and_trailers_are_bounded() {
    let unending = format!("5;{}", "x".repeat(MAX_CHUNK_LINE));
    assert_eq!(whole(&unending), Err(ChunkError::LineTooLong));
    assert_eq!(whole(&unending[..MAX_CHUNK_LINE]), Ok(None));
    // Whole, with its CRLF: one byte over the bound is refused, the bound is not.
    let longest = format!("5;{}", "x".repeat(MAX_CHUNK_LINE - 2));
    assert_eq!(
        whole(&format!("{longest}x\r\n")),
        Err(ChunkError::LineTooLong)
    );
    assert_eq!(
        whole(&format!("{longest}\r\nhello\r\n0\r\n\r\n")),
        Ok(Some(Bytes::from("hello")))
    );
    let long_trailer = format!("X-T: {}\r\n", "t".repeat(MAX_CHUNK_LINE));
    assert_eq!(
        whole(&format!("0\r\n{long_trailer}\r\n")),
        Err(ChunkError::LineTooLong)
    );
    let trailer = format!("X-T: {}\r\n", "t".repeat(1000));
    let trailers = trailer.repeat(MAX_HEAD_BYTES / trailer.len() + 1);
    assert_eq!(
        whole(&format!("0\r\n{trailers}\r\n")),
        Err(ChunkError::TrailersTooLarge(MAX_HEAD_BYTES))
    );
}

#[test]
fn each_wait_says_how_much_more_is_needed() {
    let mut decoder = ChunkedDecoder::new(64);
    let mut buf = BytesMut::from(&b"5\r\nhe"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Need(5)));
    buf.extend_from_slice(b"llo\r");
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Need(1)));
    buf.extend_from_slice(b"\n0\r");
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Need(1)));
    buf.extend_from_slice(b"\n\r\n");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Body(Bytes::from_static(b"hello")))
    );
}

/// Bytes that look like a chunked body now and then: a random prefix of one,
/// followed by noise.
fn body_like() -> impl Strategy<Value = Vec<u8>> {
    let sample = b"5;x=y\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
    (0..=sample.len(), vec(any::<u8>(), 0..96))
        .prop_map(move |(keep, noise)| [&sample[..keep], &noise[..]].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives, the decoder answers with the body, a wait or a typed
    /// error, never panics, and answers the same however the bytes were cut.
    #[test]
    fn arbitrary_bytes_decode_alike_however_cut(
        bytes in prop_oneof![body_like(), vec(any::<u8>(), 0..256)],
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let at_once = decode(32, &[&bytes]).0;
        let in_pieces = decode(32, &reads(&bytes, &cuts)).0;
        prop_assert_eq!(at_once, in_pieces);
    }

    /// A body sent chunked, with trailers, cut across reads at arbitrary points,
    /// decodes to itself and leaves what follows it.
    #[test]
    fn chunked_bodies_decode_to_themselves(
        body in vec(any::<u8>(), 0..200),
        chunk_cuts in vec(0usize..200, 0..6),
        trailers in vec(field(), 0..3),
        read_cuts in vec(any::<usize>(), 0..8),
    ) {
        let mut bytes = chunked(&body, &chunk_cuts, &trailers);
        bytes.extend_from_slice(b"NEXT");
        let (decoded, rest) = decode(200, &reads(&bytes, &read_cuts));
        prop_assert_eq!(decoded, Ok(Some(Bytes::from(body))));
        prop_assert_eq!(&rest[..], b"NEXT");
    }
}

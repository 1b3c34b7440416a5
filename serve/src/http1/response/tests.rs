//! The head each kind of response is written with.

use http::{HeaderValue, Response};

use super::*;

const GET: Asked = Asked {
    head: false,
    version: Version::HTTP_11,
};

/// The head written for a response of `status` with `headers`, and its shape.
fn written(
    status: u16,
    headers: &[(&'static str, &'static str)],
    size: Option<u64>,
    asked: Asked,
    keep_alive: bool,
) -> (String, Shape) {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).expect("a status");
    for &(name, value) in headers {
        response
            .headers_mut()
            .append(name, HeaderValue::from_static(value));
    }
    let (parts, ()) = response.into_parts();
    let mut w = Vec::new();
    let shape = write_head(&mut w, &parts, size, asked, keep_alive);
    (String::from_utf8(w).expect("text"), shape)
}

/// A [`written`] head less its `Date` line, which changes.
fn undated((text, shape): (String, Shape)) -> (String, Shape) {
    let lines: Vec<&str> = text
        .split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect();
    (lines.join("\r\n"), shape)
}

fn shape(bodiless: bool, chunked: bool, length: Option<u64>, keep_alive: bool) -> Shape {
    Shape {
        bodiless,
        chunked,
        length,
        keep_alive,
    }
}

#[test]
fn a_body_of_known_length_is_announced() {
    assert_eq!(
        undated(written(200, &[("x-a", "1")], Some(5), GET, true)),
        (
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n".into(),
            shape(false, false, Some(5), true)
        )
    );
    // From the header when the body does not say.
    assert_eq!(
        undated(written(200, &[("content-length", "7")], None, GET, false)),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\n".into(),
            shape(false, false, Some(7), false)
        )
    );
}

#[test]
fn a_body_of_unknown_length_is_chunked_or_ends_with_the_connection() {
    assert_eq!(
        undated(written(
            200,
            &[("transfer-encoding", "gzip")],
            None,
            GET,
            true
        )),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".into(),
            shape(false, true, None, true)
        )
    );
    let http10 = Asked {
        head: false,
        version: Version::HTTP_10,
    };
    assert_eq!(
        undated(written(200, &[], None, http10, true)),
        (
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".into(),
            shape(false, false, None, false)
        )
    );
    assert_eq!(
        undated(written(200, &[], Some(2), http10, true)),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n".into(),
            shape(false, false, Some(2), true)
        )
    );
}

#[test]
fn bodiless_answers_keep_their_headers_and_send_no_body() {
    let asked_head = Asked {
        head: true,
        version: Version::HTTP_11,
    };
    assert_eq!(
        undated(written(
            200,
            &[("content-length", "42")],
            Some(0),
            asked_head,
            true
        )),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n".into(),
            shape(true, false, Some(0), true)
        )
    );
    for status in [204, 304] {
        let (text, written) = undated(written(status, &[], None, GET, true));
        assert!(
            !text.contains("content-length") && !text.contains("chunked"),
            "{text}"
        );
        assert_eq!(written, shape(true, false, None, true));
    }
}

#[test]
fn connection_and_date_are_the_connections_own() {
    // A response's own Date stays, alone; its Connection is not the client's.
    let (text, _) = written(
        404,
        &[
            ("connection", "keep-alive"),
            ("date", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ],
        Some(0),
        GET,
        true,
    );
    assert_eq!(
        text,
        "HTTP/1.1 404 Not Found\r\ndate: Tue, 01 Jan 2030 00:00:00 GMT\r\ncontent-length: 0\r\n\r\n"
    );
    let (text, _) = written(200, &[], Some(0), GET, true);
    let dates: Vec<&str> = text
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("date: "))
        .collect();
    assert_eq!(dates.len(), 1, "{text}");
    assert!(httpdate::parse_http_date(dates[0]).is_ok(), "{text}");
    let (unknown, _) = written(599, &[], Some(0), GET, true);
    assert!(unknown.starts_with("HTTP/1.1 599 \r\n"), "{unknown}");
}

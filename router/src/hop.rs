//! Headers that describe one hop, not the message (RFC 9110 section 7.6.1):
//! dropped from requests on their way to a cell and from the cells' responses.

use http::header::{self, HeaderMap};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over their few names, compared as
    // strings (by length first), costs less than a hashed lookup per hop-by-hop
    // name, or than comparing `HeaderName`s.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Every `Connection` line may name more hop-by-hop headers.
        let named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_owned())
            .collect();
        for name in named {
            headers.remove(name.as_str());
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue};

    use super::*;

    #[test]
    fn every_connection_line_names_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("x-one"));
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("x-two, keep-alive"),
        );
        for name in ["x-one", "x-two", "keep-alive", "x-kept"] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept", "transfer-encoding"]);
    }
}

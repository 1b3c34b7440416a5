//! The user API's route table: what a cell serves, what `cell/openapi.json`
//! describes, and the only paths a router proxies.

/// Every route of the user API as `(method, path template)`; a `{name}` stands for
/// one path segment (an empty or malformed id is the route's to refuse, with a
/// reason more useful than 404).
pub const USER_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/users/{user_id}/whoami"),
    ("GET", "/v1/users/{user_id}/balance"),
    ("POST", "/v1/users/{user_id}/deposits"),
    ("POST", "/v1/users/{user_id}/transfers"),
    ("POST", "/v1/users/{user_id}/orders"),
    ("GET", "/v1/users/{user_id}/orders"),
    ("GET", "/v1/users/{user_id}/orders/{order_id}"),
    ("GET", "/v1/users/{user_id}/journal"),
    ("GET", "/v1/items/{item_id}"),
];

/// Why a request matches no route of [`USER_ROUTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMiss {
    /// No route has this path.
    NotFound,
    /// Routes have this path, with other methods: the value of an `Allow` header.
    MethodNotAllowed(&'static str),
}

/// Whether `method path` is a route of the user API.
pub fn user_route(method: &str, path: &str) -> Result<(), RouteMiss> {
    let mut methods = USER_ROUTES
        .iter()
        .filter(|(_, template)| matches(template, path))
        .map(|(m, _)| *m)
        .peekable();
    if methods.peek().is_none() {
        return Err(RouteMiss::NotFound);
    }
    let (mut get, mut post) = (false, false);
    for m in methods {
        if m == method {
            return Ok(());
        }
        get |= m == "GET";
        post |= m == "POST";
    }
    Err(RouteMiss::MethodNotAllowed(match (get, post) {
        (true, true) => "GET, POST",
        (true, false) => "GET",
        _ => "POST",
    }))
}

/// Whether `path` fits `template`, segment by segment.
fn matches(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w == h || w.starts_with('{') => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_matches_itself_with_ids_filled_in() {
        for (method, template) in USER_ROUTES {
            let path = template
                .replace("{user_id}", "u1")
                .replace("{order_id}", "o7")
                .replace("{item_id}", "sku-1");
            assert_eq!(user_route(method, &path), Ok(()), "{method} {path}");
        }
    }

    #[test]
    fn other_paths_are_not_found() {
        for path in [
            "/v1/gz/leases",
            "/v1/gz/items",
            "/admin/items/x",
            "/v1/users/u1",
            "/v1/users/u1/",
            "/v1/users/u1/balance/",
            "/v1/users/u1/orders/o1/x",
            "/v1/users/u1/../../v1/gz/leases",
            "/v1/items",
            "/",
        ] {
            assert_eq!(user_route("GET", path), Err(RouteMiss::NotFound), "{path}");
        }
    }

    #[test]
    fn a_known_path_with_another_method_names_the_allowed_ones() {
        let cases = [
            ("DELETE", "/v1/users/u1/balance", "GET"),
            ("GET", "/v1/users/u1/deposits", "POST"),
            ("PUT", "/v1/users/u1/orders", "GET, POST"),
            ("POST", "/v1/items/sku-1", "GET"),
        ];
        for (method, path, allow) in cases {
            assert_eq!(
                user_route(method, path),
                Err(RouteMiss::MethodNotAllowed(allow)),
                "{method} {path}"
            );
        }
    }
}

//! User ids: which are valid, and where one sits in a request path.

/// Whether `id` is a valid user id (and cell, router or region id):
/// `[A-Za-z0-9_-]{1,64}`.
#[inline]
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits `/v1/users/{user_id}/rest` into the user id (unvalidated) and the rest of
/// the path after it (`""` or starting with `/`).
#[inline]
pub fn split_user_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/users/")?;
    Some(rest.split_at(rest.find('/').unwrap_or(rest.len())))
}

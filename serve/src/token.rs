//! The operators' bearer token: every `/admin/*` route of every process requires
//! it. It is read from the file the deploy file names, compared in constant time,
//! and never logged or shown.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use http::{HeaderMap, header};

/// Random bytes in a token `ldc up` creates (written as hex).
const TOKEN_BYTES: usize = 32;
/// A token shorter than this is refused: it could be guessed.
const MIN_TOKEN_LEN: usize = 16;

/// A deployment's admin token.
#[derive(Clone)]
pub struct AdminToken(Box<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token file {path}: {cause}")]
    Read { path: String, cause: io::Error },
    #[error("cannot create the admin token file {path}: {cause}")]
    Create { path: String, cause: io::Error },
    #[error(
        "the admin token file {path} can be read by other users (mode {mode:o}); `chmod 600` it"
    )]
    Exposed { path: String, mode: u32 },
    #[error("the admin token in {path} is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort { path: String },
}

/// Why a request was refused its admin route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` token: 401 `unauthenticated`.
    Missing,
    /// A token, not this one: 403 `forbidden`.
    Wrong,
}

impl AdminToken {
    /// Reads the token in `path` (surrounding whitespace ignored). Refuses a file
    /// other users may read.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let shown = || path.display().to_string();
        let read = |cause| TokenError::Read {
            path: shown(),
            cause,
        };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed {
                path: shown(),
                mode,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read)?;
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { path: shown() });
        }
        Ok(Self(token.into()))
    }

    /// Creates a new random token in `path` (mode 0600 from the start), unless the
    /// file exists. Returns whether it created one.
    pub fn create(path: &Path) -> Result<bool, TokenError> {
        let create = |cause| TokenError::Create {
            path: path.display().to_string(),
            cause,
        };
        if path.exists() {
            return Ok(false);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        let mut random = [0u8; TOKEN_BYTES];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut urandom| urandom.read_exact(&mut random))
            .map_err(create)?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create)?;
        writeln!(file, "{hex}")
            .and_then(|()| file.sync_all())
            .map_err(create)?;
        Ok(true)
    }

    /// Whether `headers` carry this token as `Authorization: Bearer`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(Refusal::Missing)?;
        if constant_time_eq(given.trim().as_bytes(), self.0.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }

    /// The `Authorization` header value that carries this token, for clients.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// Compares without an early exit, so the time taken does not tell how many
/// leading bytes of a guess were right (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        headers
    }

    #[test]
    fn a_created_token_is_private_and_accepted_only_as_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("admin.token");
        assert!(AdminToken::create(&path).expect("create"));
        assert!(!AdminToken::create(&path).expect("second create"));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = AdminToken::read(&path).expect("read");
        assert_eq!(token.check(&headers(&token.bearer())), Ok(()));
        assert_eq!(token.check(&HeaderMap::new()), Err(Refusal::Missing));
        assert_eq!(token.check(&headers("Basic abc")), Err(Refusal::Missing));
        assert_eq!(
            token.check(&headers("Bearer 0123456789abcdef0123")),
            Err(Refusal::Wrong)
        );
        assert!(!format!("{token:?}").contains(&token.bearer()[7..]));
    }

    #[test]
    fn exposed_or_short_token_files_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            AdminToken::read(&path),
            Err(TokenError::Exposed { mode: 0o644, .. })
        ));
        std::fs::write(&path, "short\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            AdminToken::read(&path),
            Err(TokenError::TooShort { .. })
        ));
    }
}

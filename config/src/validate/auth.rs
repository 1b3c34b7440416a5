//! Validation of the `[auth]` table. The key files are read by the routers, at start
//! and on reload, not here.

use std::collections::{HashMap, HashSet};

use super::Checker;
use crate::auth::{AuthConf, JwtAlgorithm};

/// Cap on `auth.leeway_s`: beyond a few minutes, skew hides expired tokens.
const MAX_LEEWAY_S: u64 = 300;
/// Cap on `auth.cache_entries`.
const MAX_CACHE_ENTRIES: u32 = 1 << 24;

impl Checker {
    pub(super) fn auth(&mut self, auth: &AuthConf) {
        if auth.algorithms.is_empty() {
            self.problem("auth.algorithms", "at least one algorithm");
        }
        let mut allowed = HashSet::new();
        for (i, name) in auth.algorithms.iter().enumerate() {
            match name.parse::<JwtAlgorithm>() {
                Ok(algorithm) => {
                    allowed.insert(algorithm);
                }
                Err(why) => self.problem(format!("auth.algorithms[{i}]"), why),
            }
        }
        if auth.keys.is_empty() && auth.jwks_file.is_none() {
            self.problem(
                "auth.keys",
                "no key: give [[auth.keys]], auth.jwks_file or both",
            );
        }
        let mut kids: HashMap<&str, usize> = HashMap::new();
        for (i, key) in auth.keys.iter().enumerate() {
            let at = |field: &str| format!("auth.keys[{i}].{field}");
            if key.kid.is_empty() {
                self.problem(at("kid"), "must not be empty");
            } else if let Some(first) = kids.insert(&key.kid, i) {
                self.problem(
                    at("kid"),
                    format!("duplicate kid {:?} (also auth.keys[{first}])", key.kid),
                );
            }
            match key.algorithm.parse::<JwtAlgorithm>() {
                Ok(algorithm) if !allowed.contains(&algorithm) => self.problem(
                    at("algorithm"),
                    format!("{algorithm} is not in auth.algorithms"),
                ),
                Ok(_) => {}
                Err(why) => self.problem(at("algorithm"), why),
            }
        }
        for (key, value) in [
            ("auth.issuer", &auth.issuer),
            ("auth.audience", &auth.audience),
        ] {
            if value.as_deref() == Some("") {
                self.problem(key, "must not be empty when set");
            }
        }
        if auth.leeway_s > MAX_LEEWAY_S {
            self.problem(
                "auth.leeway_s",
                format!("at most {MAX_LEEWAY_S} (got {})", auth.leeway_s),
            );
        }
        if auth.cache_entries == 0 || auth.cache_entries > MAX_CACHE_ENTRIES {
            self.problem(
                "auth.cache_entries",
                format!(
                    "must be between 1 and {MAX_CACHE_ENTRIES} (got {})",
                    auth.cache_entries
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ConfigError;
    use crate::topology::Topology;

    const CELLS: &str = "[[regions]]\nid = \"r\"\n[[cells]]\nid = \"c1\"\nregion = \"r\"\n\
                         listen = \"127.0.0.1:7101\"\nadmin = \"127.0.0.1:7201\"\n";

    /// The problems of a deploy file with this `[auth]` table, as `key: message`.
    fn problems(auth: &str) -> Vec<String> {
        match Topology::from_toml_str("test.toml", &format!("{CELLS}\n{auth}")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => problems
                .into_iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect(),
            Err(err) => panic!("not parsed: {err}"),
        }
    }

    #[test]
    fn two_keys_of_allowed_algorithms_and_a_jwks_file_are_valid() {
        let auth = "[auth]\nalgorithms = [\"EdDSA\", \"HS256\"]\njwks_file = \"idp.json\"\n\
                    issuer = \"https://login.example\"\naudience = \"ldc\"\n\
                    [[auth.keys]]\nkid = \"new\"\nalgorithm = \"EdDSA\"\nfile = \"new.pem\"\n\
                    [[auth.keys]]\nkid = \"old\"\nalgorithm = \"HS256\"\nfile = \"old.secret\"\n";
        assert_eq!(problems(auth), Vec::<String>::new());
        let topology =
            Topology::from_toml_str("test.toml", &format!("{CELLS}\n{auth}")).expect("valid");
        let conf = topology.deploy().auth.as_ref().expect("[auth]");
        assert_eq!((conf.leeway_s, conf.cache_entries), (30, 16_384));
        // The resolved file `ldc up` writes keeps the table as it was.
        let again = Topology::from_toml_str("resolved.toml", &topology.to_toml()).expect("valid");
        assert_eq!(again.deploy().auth, topology.deploy().auth);
    }

    #[test]
    fn bad_auth_tables_are_refused_with_every_problem_named() {
        let auth = "[auth]\nalgorithms = [\"EdDSA\", \"HS384\"]\ncache_entries = 0\n\
                    leeway_s = 3600\nissuer = \"\"\n\
                    [[auth.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nfile = \"a\"\n\
                    [[auth.keys]]\nkid = \"k\"\nalgorithm = \"none\"\nfile = \"b\"\n";
        assert_eq!(
            problems(auth),
            [
                "auth.algorithms[1]: unknown algorithm \"HS384\"; one of EdDSA, ES256, RS256, HS256",
                "auth.keys[0].algorithm: HS256 is not in auth.algorithms",
                "auth.keys[1].kid: duplicate kid \"k\" (also auth.keys[0])",
                "auth.keys[1].algorithm: unknown algorithm \"none\"; one of EdDSA, ES256, RS256, HS256",
                "auth.issuer: must not be empty when set",
                "auth.leeway_s: at most 300 (got 3600)",
                "auth.cache_entries: must be between 1 and 16777216 (got 0)",
            ]
        );
    }

    #[test]
    fn an_auth_table_without_keys_or_algorithms_is_refused() {
        assert_eq!(
            problems("[auth]\nalgorithms = []\n"),
            [
                "auth.algorithms: at least one algorithm",
                "auth.keys: no key: give [[auth.keys]], auth.jwks_file or both",
            ]
        );
    }
}

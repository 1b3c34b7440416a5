//! `ensure` on deploy files that grow, and its certificates loaded by `Tls`.

use std::os::unix::fs::PermissionsExt;

use ldc_serve::tls::Tls;

use super::*;

/// A deployment `test` with `cells` and one router, `r1`.
fn topology(cells: &[&str]) -> Topology {
    let mut text = String::from("name = \"test\"\n[[regions]]\nid = \"r\"\n");
    for cell in cells {
        text += &format!(
            "[[cells]]\nid = \"{cell}\"\nregion = \"r\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n"
        );
    }
    text += "[[routers]]\nid = \"r1\"\nregion = \"r\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";
    Topology::from_toml_str("test.toml", &text).expect("a valid deploy file")
}

fn names(created: &Created) -> Vec<String> {
    created
        .files
        .iter()
        .map(|path| {
            path.file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn load(dir: &Path, role: Role, id: &str, claimed: &str) -> Result<Tls, ldc_serve::tls::TlsError> {
    let identity = Identity::new("test", role, claimed).expect("a valid identity");
    Tls::load(files(dir, role, id), identity)
}

/// Every file of `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|entry| {
            let path = entry.expect("an entry").path();
            let contents = std::fs::read(&path).expect("read a file");
            (path, contents)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn init_creates_the_ca_and_a_leaf_per_process_with_private_keys() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let dir = root.path().join("certs");
    let created = ensure(&topology(&["a", "b"]), &dir).expect("certificates");
    assert_eq!(
        names(&created),
        [
            "ca.key",
            "ca.crt",
            "cell-a.key",
            "cell-a.crt",
            "cell-b.key",
            "cell-b.crt",
            "router-r1.key",
            "router-r1.crt",
        ]
    );
    assert_eq!(
        snapshot(&dir).len(),
        created.files.len(),
        "no temporary file left"
    );
    assert_eq!(mode(&dir), 0o700);
    for path in &created.files {
        let expected = if path.extension() == Some("key".as_ref()) {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode(path), expected, "{}", path.display());
    }
    for (role, id) in [(Role::Cell, "a"), (Role::Cell, "b"), (Role::Router, "r1")] {
        load(&dir, role, id, id).expect("the leaf verifies under the CA");
    }
    let err = load(&dir, Role::Cell, "a", "b").expect_err("cell a's certificate is not cell b's");
    assert!(
        err.to_string().contains("spiffe://ldc/test/cell/a"),
        "{err}"
    );
}

#[test]
fn a_second_run_creates_nothing_and_keeps_every_file() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let topology = topology(&["a"]);
    ensure(&topology, root.path()).expect("certificates");
    let before = snapshot(root.path());
    assert_eq!(
        ensure(&topology, root.path()).expect("a second run"),
        Created::default()
    );
    assert_eq!(snapshot(root.path()), before);
}

#[test]
fn a_new_cell_gets_a_leaf_from_the_same_ca() {
    let root = tempfile::tempdir().expect("a temporary directory");
    ensure(&topology(&["a"]), root.path()).expect("certificates");
    let ca = std::fs::read(root.path().join(CA_CERT)).expect("read the CA");
    let created = ensure(&topology(&["a", "c"]), root.path()).expect("the new cell's");
    assert_eq!(names(&created), ["cell-c.key", "cell-c.crt"]);
    assert_eq!(
        std::fs::read(root.path().join(CA_CERT)).expect("read the CA"),
        ca
    );
    load(root.path(), Role::Cell, "c", "c").expect("the new leaf verifies under the old CA");
    load(root.path(), Role::Cell, "a", "a").expect("the old leaf still verifies");
}

#[test]
fn without_the_ca_key_nothing_new_is_issued() {
    let root = tempfile::tempdir().expect("a temporary directory");
    ensure(&topology(&["a"]), root.path()).expect("certificates");
    std::fs::remove_file(root.path().join(CA_KEY)).expect("take the CA key away");
    assert_eq!(
        ensure(&topology(&["a"]), root.path()).expect("nothing is missing"),
        Created::default()
    );
    let before = snapshot(root.path());
    let err = ensure(&topology(&["a", "c"]), root.path()).expect_err("cell c cannot be issued");
    assert!(
        matches!(&err, CertsError::NoCaKey { missing, .. } if *missing == [root.path().join("cell-c.crt")]),
        "{err}"
    );
    assert_eq!(snapshot(root.path()), before);
}

#[test]
fn a_lone_half_of_a_pair_or_a_foreign_ca_key_is_refused() {
    let root = tempfile::tempdir().expect("a temporary directory");
    ensure(&topology(&["a"]), root.path()).expect("certificates");
    let key = files(root.path(), Role::Cell, "a").key;
    std::fs::remove_file(&key).expect("remove cell a's key");
    let err = ensure(&topology(&["a"]), root.path()).expect_err("a certificate without its key");
    assert!(
        matches!(&err, CertsError::HalfPair { absent, .. } if *absent == key),
        "{err}"
    );

    let other = tempfile::tempdir().expect("a temporary directory");
    ensure(&topology(&["b"]), other.path()).expect("another deployment's certificates");
    std::fs::copy(other.path().join(CA_KEY), root.path().join(CA_KEY)).expect("swap CA keys");
    std::fs::copy(other.path().join("cell-b.key"), &key).expect("give cell a a key back");
    let err = ensure(&topology(&["a", "c"]), root.path()).expect_err("the CA key is another's");
    assert!(matches!(err, CertsError::KeyMismatch { .. }), "{err}");
}

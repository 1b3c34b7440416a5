//! The config tools of the `ldc` binary: `check-config`, `route`, and exit code 64
//! for a bad deploy file everywhere.

use std::path::Path;
use std::process::{Command, Output};

use ldc_topology::Topology;

fn ldc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ldc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ldc")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn shipped_deploy_files_are_valid() {
    for file in ["config/local.toml", "config/multi-region.toml"] {
        let out = ldc(&["check-config", file]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(": ok: "),
            "{}",
            text(&out.stdout)
        );
    }
    let local = ldc(&["check-config", "config/local.toml"]);
    assert!(text(&local.stdout).contains("1 regions, 3 cells, 1 routers"));
}

#[test]
fn multi_region_file_puts_every_standby_in_another_region() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/multi-region.toml");
    let topology = Topology::load(&path).expect("valid");
    assert_eq!(topology.regions().count(), 3);
    assert_eq!(topology.cells().len(), 6);
    for region in topology.regions() {
        let cells = topology
            .cells()
            .iter()
            .filter(|c| c.region == region)
            .count();
        let routers = topology
            .routers()
            .iter()
            .filter(|r| r.region == region)
            .count();
        assert_eq!((cells, routers), (2, 1), "region {region}");
    }
    for cell in topology.cells() {
        let standby = &topology.cells()[cell.standby.expect("every cell has a standby")];
        assert_ne!(standby.region, cell.region, "standby of {}", cell.id);
    }
}

#[test]
fn bad_deploy_files_exit_64_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "typo.toml",
            "[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\nwieght = 2\n",
            "wieght",
        ),
        (
            "zero.toml",
            "[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\nweight = 0\n",
            "cells[0].weight",
        ),
        (
            "standby.toml",
            "[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\nstandby = \"b\"\n",
            "cells[0].standby",
        ),
        (
            "dup.toml",
            "[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:3\"\n",
            "cells[1].id",
        ),
        (
            "slots.toml",
            "slots = 70000\n[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n",
            "slots",
        ),
        ("empty.toml", "", "cells"),
        (
            "hold.toml",
            "[takeover]\npoll_ms = 50\nlease_ms = 100\n[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n",
            "takeover.lease_ms",
        ),
        (
            "idle.toml",
            "[timeouts]\nhttp2_idle_timeout_ms = 5000\n[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n",
            "timeouts.http2_idle_timeout_ms",
        ),
        (
            "commit.toml",
            "[ledger]\ncommit = \"one_pc\"\n[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n",
            "ledger.commit",
        ),
        (
            "async.toml",
            "[ledger]\nbackend = \"tikv\"\npd_endpoints = [\"127.0.0.1:2379\"]\ncommit = \"async\"\n[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n",
            "ledger.commit",
        ),
        (
            "override.toml",
            "[[regions]]\nid = \"r\"\n[[cells]]\nid = \"a\"\nregion = \"r\"\nlisten = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n[[overrides]]\nfrom = 1\ncell = \"zz\"\n",
            "overrides[0].cell",
        ),
    ];
    for (name, body, key) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        let path = path.to_str().expect("utf-8 path");
        for args in [
            vec!["check-config", path],
            vec!["route", "--config", path, "alice"],
            vec!["cell", "--config", path, "--id", "a"],
            vec!["router", "--config", path, "--id", "r1"],
            vec!["up", "--config", path],
        ] {
            let out = ldc(&args);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
            assert!(
                stderr.contains(name) && stderr.contains(key),
                "{args:?}: {stderr}"
            );
        }
    }
    let missing = ldc(&["check-config", "no/such/file.toml"]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(text(&missing.stderr).contains("no/such/file.toml"));
}

#[test]
fn route_prints_the_placement_of_a_user() {
    let topology = Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml"))
        .expect("valid");
    for user in ["alice", "bob", "u-42"] {
        let out = ldc(&["route", "--config", "config/local.toml", user]);
        assert!(out.status.success());
        let (slot, index) = topology.route(user);
        let cell = &topology.cells()[index];
        let line = text(&out.stdout);
        assert!(line.contains(&format!("slot {slot} of 4096")), "{line}");
        assert!(
            line.contains(&format!("cell {} (region local", cell.id)),
            "{line}"
        );
        let standby = &topology.cells()[cell.standby.expect("standby")].id;
        assert!(line.contains(&format!("standby {standby}")), "{line}");
    }
    let bad = ldc(&["route", "--config", "config/local.toml", "not valid"]);
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn an_unknown_process_id_exits_64() {
    let out = ldc(&["cell", "--config", "config/local.toml", "--id", "nope"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("there is no cell \"nope\""));
}

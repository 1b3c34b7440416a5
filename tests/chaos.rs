//! `ldc chaos` end to end: a short seeded run against a real cluster passes its own
//! verdict, and a seed names one fault schedule. (That the checker can fail is shown
//! by its unit tests, fed doctored records.)
//!
//! A binary of its own, beside `tests/e2e`: cargo runs test binaries one after
//! another, so the run has the host to itself. It asserts that users of healthy
//! cells see no error; run beside the other cluster tests on 2 cores, it failed
//! when a user of a cell that was not faulted got 503 `cell_unavailable` while
//! that cell took over another cell's shard.

use std::process::Command;

use serde_json::Value;

fn ldc(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ldc"))
        .args(args)
        .env("LDC_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ldc chaos")
}

fn config() -> String {
    format!("{}/config/chaos.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_seed_names_one_schedule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = |seed: &str| {
        let out = ldc(
            &[
                "chaos",
                "--config",
                &config(),
                "--seed",
                seed,
                "--duration",
                "60s",
                "--plan",
            ],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let first = plan("42");
    assert_eq!(first, plan("42"));
    assert_ne!(first, plan("43"));
    assert!(
        first.starts_with("ldc chaos: seed 42\n"),
        "the seed comes first: {first}"
    );
    assert!(first.lines().count() > 20, "{first}");
}

#[test]
fn a_short_seeded_run_keeps_every_invariant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report_path = dir.path().join("report.json");
    let out = ldc(
        &[
            "chaos",
            "--config",
            &config(),
            "--seed",
            "42",
            "--duration",
            "20s",
            "--report",
            report_path.to_str().expect("path"),
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ldc chaos failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ldc chaos: seed 42\n"), "{stdout}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    assert_eq!(report["seed"], 42);
    for (invariant, verdict) in report["invariants"].as_object().expect("invariants") {
        assert_eq!(verdict, "ok", "{invariant}");
    }
    assert_eq!(
        report["invariants"].as_object().expect("invariants").len(),
        7
    );
    let injected = report["schedule"]
        .as_array()
        .expect("schedule")
        .iter()
        .filter(|s| s["outcome"].as_str().is_some_and(|o| o.starts_with("pid")))
        .count();
    assert!(
        injected >= 5,
        "faults were injected: {}",
        report["schedule"]
    );
    assert!(
        report["requests"].as_u64() > Some(1_000),
        "{}",
        report["requests"]
    );
    assert!(
        report["outcomes"]["201"].as_u64() > Some(500),
        "{}",
        report["outcomes"]
    );
    assert_eq!(
        report["errors_elsewhere"], 0,
        "users of healthy shards saw no errors: {stdout}"
    );
}

//! `testkv`: the PD + TiKV test server as a process, for scripts. It prints one
//! JSON line when it is ready, `{"pd":["host:port"],"stores":[...],"control":"host:port"}`,
//! and serves until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use testkv::{Config, TestKv};

#[derive(Debug, Parser)]
#[command(
    name = "testkv",
    about = "A PD + TiKV gRPC test server (for tests, not for data)"
)]
struct Args {
    /// The address every port listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// PD's port (0: any free one).
    #[arg(long, default_value_t = 0)]
    pd_port: u16,
    /// How many TiKV stores (each on a free port).
    #[arg(long, default_value_t = 1)]
    stores: usize,
    /// A region boundary (raw key, as text); repeat for more.
    #[arg(long = "split")]
    split: Vec<String>,
    /// Keep the data here (default: in memory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The control API's port (0: any free one).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// A store that ignores locks and conflicts, to prove a test suite catches it.
    #[arg(long)]
    no_locking: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config {
        host: args.host.clone(),
        pd_port: args.pd_port,
        stores: args.stores,
        split_keys: args.split.into_iter().map(String::into_bytes).collect(),
        data_dir: args.data,
        locking: !args.no_locking,
    };
    let kv = match TestKv::start(config).await {
        Ok(kv) => Arc::new(kv),
        Err(err) => {
            eprintln!("testkv: {err}");
            return ExitCode::from(1);
        }
    };
    let control = match tokio::net::TcpListener::bind((args.host.as_str(), args.control_port)).await
    {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "testkv: control API on {}:{}: {err}",
                args.host, args.control_port
            );
            return ExitCode::from(1);
        }
    };
    let control_addr = control
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tokio::spawn(testkv::control::serve(kv.clone(), control));
    println!(
        "{}",
        serde_json::json!({
            "pd": kv.pd_endpoints(),
            "stores": kv.store_addresses(),
            "control": control_addr,
        })
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            eprintln!("testkv: SIGTERM handler: {err}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ExitCode::SUCCESS
}

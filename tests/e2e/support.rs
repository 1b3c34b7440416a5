//! Test harness: a whole local cluster started by `ldc up` on free ports, with the
//! addresses and pids it reports, and SIGKILL at hand.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ldc::client::HttpClient;
use ldc_serve::tls::Role;
use ldc_topology::Topology;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Bound on every wait for the supervisor's report.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A process of the cluster, as `ldc up` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// A cell's peer listener.
    pub peer: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    cells: usize,
    routers: usize,
    restart_backoff_ms: u64,
    standbys: bool,
    extra: String,
    /// The `[ledger]` and `[takeover]` tables: empty for the embedded default.
    ledger: String,
    /// A deploy file to run instead of one made from the fields above.
    file: Option<String>,
}

impl ClusterBuilder {
    /// Each cell stands by for the one before it: c1 -> c2 -> ... -> c1.
    pub fn standbys(mut self) -> Self {
        self.standbys = true;
        self
    }

    pub fn cells(mut self, n: usize) -> Self {
        self.cells = n;
        self
    }

    /// How long `ldc up` waits before restarting a dead child.
    pub fn restart_backoff_ms(mut self, ms: u64) -> Self {
        self.restart_backoff_ms = ms;
        self
    }

    /// Extra TOML tables, e.g. `[limits]\nmax_body_bytes = 1024`.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra = toml.to_owned();
        self
    }

    /// Cells keep their ledgers in `kv` (the TiKV backend over testkv), and hand
    /// shards over through holds with a short lease, so a takeover takes a fraction of
    /// a second as with the embedded store's file locks.
    #[cfg(feature = "tikv")]
    pub fn tikv(mut self, kv: &testkv::TestKv) -> Self {
        let endpoints: Vec<String> = kv
            .pd_endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        self.ledger = format!(
            "[ledger]\nbackend = \"tikv\"\npd_endpoints = [{}]\n[takeover]\nlease_ms = 600\npoll_ms = 100\n",
            endpoints.join(", ")
        );
        self
    }

    /// Runs `text`, a deploy file such as `config/local.toml`, instead of one made
    /// from the builder: every listener on port 0 and `data_dir` in the test's
    /// temporary directory, the rest as written.
    pub fn deploy_file(mut self, text: &str) -> Self {
        self.file = Some(text.to_owned());
        self
    }

    /// The deploy file: every listener on port 0, data under `data`.
    fn deploy_text(&self, data: &Path) -> String {
        if let Some(text) = &self.file {
            return on_free_ports(text, data);
        }
        let mut text = format!(
            "name = \"test\"\ndata_dir = \"{}\"\n{}\n{}\n[supervisor]\nrestart_backoff_initial_ms = {}\nrestart_backoff_max_ms = {}\n\n[[regions]]\nid = \"local\"\n",
            data.display(),
            self.extra,
            self.ledger,
            self.restart_backoff_ms,
            self.restart_backoff_ms.max(10_000),
        );
        for i in 1..=self.cells {
            text += &format!(
                "\n[[cells]]\nid = \"c{i}\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n"
            );
            if self.standbys {
                text += &format!("standby = \"c{}\"\n", i % self.cells + 1);
            }
        }
        for i in 1..=self.routers {
            text += &format!(
                "\n[[routers]]\nid = \"r{i}\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n"
            );
        }
        text
    }

    /// Writes a deploy file with every listener on port 0 and starts `ldc up` on it.
    pub async fn spawn(self) -> Cluster {
        let dir = TempDir::new().expect("temp dir");
        let data = dir.path().join("data");
        let config = dir.path().join("deploy.toml");
        std::fs::write(&config, self.deploy_text(&data)).expect("write deploy file");
        let log_path = dir.path().join("up.log");
        let log = File::create(&log_path).expect("log file");
        let mut up = Command::new(env!("CARGO_BIN_EXE_ldc"))
            .arg("up")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ldc up");
        let stdout = up.stdout.take().expect("stdout");
        let mut cluster = Cluster {
            procs: HashMap::new(),
            topology: None,
            events: BufReader::new(stdout).lines(),
            up,
            log: log_path,
            data,
            config,
            builder: self,
            client: HttpClient::new(),
            dir,
        };
        cluster.next_event_matching("ldc up: ready").await;
        let name = Topology::load(&cluster.config)
            .expect("the deploy file ldc up runs")
            .deploy()
            .name
            .clone();
        let resolved = cluster.data.join(format!("{name}.resolved.toml"));
        let topology = Topology::load(&resolved).expect("resolved deploy file");
        cluster.client =
            HttpClient::for_deployment(&topology).expect("the admin token ldc up wrote");
        cluster.topology = Some(topology);
        cluster
    }
}

/// A running cluster. Dropping it kills `ldc up`, whose children then stop by
/// themselves when their standard input closes.
#[derive(Debug)]
pub struct Cluster {
    up: Child,
    events: Lines<BufReader<ChildStdout>>,
    procs: HashMap<String, Proc>,
    topology: Option<Topology>,
    log: PathBuf,
    data: PathBuf,
    /// The deploy file `ldc up` runs, and what it was written from.
    config: PathBuf,
    builder: ClusterBuilder,
    pub client: HttpClient,
    dir: TempDir,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            cells: 3,
            routers: 1,
            restart_backoff_ms: 200,
            standbys: false,
            extra: String::new(),
            ledger: String::new(),
            file: None,
        }
    }

    pub fn topology(&self) -> &Topology {
        self.topology.as_ref().expect("topology loaded at spawn")
    }

    pub fn proc(&self, id: &str) -> Proc {
        *self
            .procs
            .get(id)
            .unwrap_or_else(|| panic!("no process {id}"))
    }

    /// `http://ADDR` of the first router.
    pub fn router_url(&self) -> String {
        format!("http://{}", self.proc("r1").listen)
    }

    pub fn cell_url(&self, id: &str) -> String {
        format!("http://{}", self.proc(id).listen)
    }

    /// A client that reaches cells as cell `id` (with its certificate), as the
    /// peer plane expects.
    pub fn client_as_cell(&self, id: &str) -> HttpClient {
        HttpClient::acting_as(self.topology(), Role::Cell, Some(id)).expect("cell credentials")
    }

    /// `http://ADDR` of a cell's peer listener.
    pub fn peer_url(&self, id: &str) -> String {
        let peer = self.proc(id).peer;
        format!(
            "http://{}",
            peer.unwrap_or_else(|| panic!("{id} has no peer listener"))
        )
    }

    /// The id of the cell that owns `user_id`.
    pub fn owner(&self, user_id: &str) -> String {
        let (_, index) = self.topology().route(user_id);
        self.topology().cells()[index].id.clone()
    }

    /// `n` user ids owned by `cell`.
    pub fn users_of(&self, cell: &str, n: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("user{i}"))
            .filter(|u| self.owner(u) == cell)
            .take(n)
            .collect()
    }

    pub fn up_pid(&self) -> Pid {
        Pid::from_raw(self.up.id().expect("ldc up is running") as i32)
    }

    pub fn kill9(&self, id: &str) {
        kill(Pid::from_raw(self.proc(id).pid as i32), Signal::SIGKILL).expect("SIGKILL");
    }

    pub fn signal_up(&self, signal: Signal) {
        kill(self.up_pid(), signal).expect("signal ldc up");
    }

    /// Waits for `ldc up` to exit and returns its exit code.
    pub async fn wait_up(&mut self) -> Option<i32> {
        tokio::time::timeout(EVENT_TIMEOUT, self.up.wait())
            .await
            .expect("ldc up exits in time")
            .expect("wait for ldc up")
            .code()
    }

    /// The next line of `ldc up`'s report that contains `needle`; records the
    /// addresses of every process started or restarted on the way.
    pub async fn next_event_matching(&mut self, needle: &str) -> String {
        self.next_event(&format!("{needle:?}"), |line| line.contains(needle))
            .await
    }

    /// Waits until `ldc up` reported a line containing each of `needles`, in any
    /// order: children restarted together are reported as each becomes ready.
    pub async fn events_matching(&mut self, needles: &[&str]) {
        let mut pending = needles.to_vec();
        while !pending.is_empty() {
            let line = self
                .next_event(&format!("{pending:?}"), |line| {
                    pending.iter().any(|needle| line.contains(needle))
                })
                .await;
            pending.retain(|needle| !line.contains(needle));
        }
    }

    /// The next line of `ldc up`'s report that `matches`, `what` describing it.
    async fn next_event(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let wait = async {
            loop {
                let line = self
                    .events
                    .next_line()
                    .await
                    .expect("read ldc up output")
                    .unwrap_or_else(|| panic!("ldc up ended before {what}"));
                self.record(&line);
                if matches(&line) {
                    return line;
                }
            }
        };
        match tokio::time::timeout(EVENT_TIMEOUT, wait).await {
            Ok(line) => line,
            Err(_) => panic!("no {what} from ldc up within {EVENT_TIMEOUT:?}"),
        }
    }

    fn record(&mut self, line: &str) {
        let Some(rest) = line
            .strip_prefix("ldc up: started ")
            .or_else(|| line.strip_prefix("ldc up: restarted "))
        else {
            return;
        };
        let mut words = rest.split_whitespace();
        let (_role, id) = (words.next(), words.next().expect("id"));
        let optional = |key: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        let field = |key: &str| optional(key).unwrap_or_else(|| panic!("no {key} in {line:?}"));
        let proc = Proc {
            pid: field("pid").parse().expect("pid"),
            listen: field("listen").parse().expect("listen"),
            admin: field("admin").parse().expect("admin"),
            peer: optional("peer").map(|peer| peer.parse().expect("peer")),
        };
        self.procs.insert(id.to_owned(), proc);
    }

    /// What `ldc up` and its children logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).expect("read ldc up's log")
    }

    /// Pids of every child `ldc up` reported.
    pub fn child_pids(&self) -> Vec<u32> {
        self.procs.values().map(|p| p.pid).collect()
    }

    /// Waits until the first router routes `user` to `cell` (the owner or its
    /// standby); returns how long that took.
    pub async fn wait_routed(&self, user: &str, cell: &str) -> Duration {
        self.wait_route(user, |served_by| served_by == cell).await
    }

    /// Waits until the first router no longer routes `user` to `cell`; returns how
    /// long that took.
    pub async fn wait_routed_away(&self, user: &str, cell: &str) -> Duration {
        self.wait_route(user, |served_by| served_by != cell).await
    }

    /// Polls the first router's `/v1/route/{user}` until `served_by` satisfies `done`.
    async fn wait_route(&self, user: &str, done: impl Fn(&str) -> bool) -> Duration {
        let url = format!("{}/v1/route/{user}", self.router_url());
        self.wait_json(&url, |route| {
            done(route["served_by"].as_str().unwrap_or_default())
        })
        .await
    }

    /// Polls `url` until its JSON answer satisfies `done`; returns how long that took.
    pub async fn wait_json(
        &self,
        url: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Duration {
        let started = std::time::Instant::now();
        loop {
            if let Ok(reply) = self.client.get(url).await
                && done(&reply.json())
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < EVENT_TIMEOUT,
                "{url} did not change in time"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Rewrites the deploy file from the builder as `change` leaves it (for a
    /// reload: `ldc up` reads it again on SIGHUP).
    pub fn rewrite_deploy(&mut self, change: impl FnOnce(ClusterBuilder) -> ClusterBuilder) {
        self.builder = change(self.builder.clone());
        let text = self.builder.deploy_text(&self.data);
        std::fs::write(&self.config, text).expect("rewrite deploy file");
    }

    /// `url` of a cell's `/admin/audit`.
    pub fn audit_url(&self, cell: &str) -> String {
        format!("http://{}/admin/audit", self.proc(cell).admin)
    }

    /// A cell's `/admin/audit`: its books recomputed from the ledger.
    pub async fn audit(&self, cell: &str) -> serde_json::Value {
        self.client
            .get(&self.audit_url(cell))
            .await
            .expect("audit answers")
            .json()
    }

    /// Deposits `amount` for every user through the router (request id `funding`).
    pub async fn deposit_all(&self, users: &[String], amount: i64) {
        let mut tasks = tokio::task::JoinSet::new();
        for user in users {
            let (client, router, user) = (self.client.clone(), self.router_url(), user.clone());
            tasks.spawn(async move {
                let body = serde_json::json!({"amount": amount, "request_id": "funding"});
                let url = format!("{router}/v1/users/{user}/deposits");
                let reply = client
                    .send(http::Method::POST, &url, &[], body.to_string().into())
                    .await
                    .expect("router answers");
                assert_eq!(
                    reply.status,
                    http::StatusCode::CREATED,
                    "deposit for {user}"
                );
            });
        }
        tasks.join_all().await;
    }
}

/// Whether a process with this pid still exists.
pub fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "--- last lines of ldc up's log ({}):",
                self.dir.path().display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        // Children notice the closed pipe and stop by themselves.
        let _ = self.up.start_kill();
    }
}

/// `text`, a deploy file, with every `listen`, `admin` and `peer` address on port 0
/// and its top-level `data_dir` set to `data`.
fn on_free_ports(text: &str, data: &Path) -> String {
    let mut in_table = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        in_table |= line.trim_start().starts_with('[');
        let Some((key, value)) = line.split_once('=') else {
            lines.push(line.to_owned());
            continue;
        };
        let key = key.trim();
        lines.push(match key {
            "data_dir" => {
                // A cell's own data_dir would land outside the temporary directory.
                assert!(!in_table, "{line:?}: only the top-level data_dir is moved");
                format!("data_dir = \"{}\"", data.display())
            }
            "listen" | "admin" | "peer" => {
                let address = value.trim().trim_matches('"');
                let (host, _) = address
                    .rsplit_once(':')
                    .unwrap_or_else(|| panic!("{line:?}: not host:port"));
                format!("{key} = \"{host}:0\"")
            }
            _ => line.to_owned(),
        });
    }
    lines.join("\n")
}

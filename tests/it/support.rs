//! Test fixtures: a running `storebox serve` process on port 0 with its own data dir, plus MQTT
//! device clients that forward what they receive into a channel.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_storebox");

/// A `storebox serve` process. Killed on drop.
pub struct StoreBox {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    pub http: String,
    pub mqtt_port: u16,
    pub token: String,
    pub stderr_path: PathBuf,
    extra_env: Vec<(String, String)>,
}

pub fn base_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "STOREBOX_STORAGE__DATA_DIR".into(),
            dir.display().to_string(),
        ),
        ("STOREBOX_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("STOREBOX_MQTT__LISTEN".into(), "127.0.0.1:0".into()),
        ("STOREBOX_LOG__LEVEL".into(), "info".into()),
    ]
}

/// Runs a one-shot storebox command against `dir`; returns (status, stdout, stderr).
pub fn cli(dir: &Path, args: &[&str], stdin: Option<&str>) -> (ExitStatus, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .envs(base_env(dir))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn storebox");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl StoreBox {
    pub fn start() -> StoreBox {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> StoreBox {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Self::start_in(dir, Some(tmp), env)
    }

    /// Starts on a data dir the caller made (e.g. a small tmpfs); `tmp` is kept until drop.
    pub fn start_in(
        dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
        env: &[(&str, &str)],
    ) -> StoreBox {
        let (ok, out, err) = {
            let (s, o, e) = cli(&dir, &["token", "add", "tests", "--role", "admin"], None);
            (s.success(), o, e)
        };
        assert!(ok, "token add failed: {out} {err}");
        let token = out.lines().last().unwrap().trim().to_string();
        let mut sb = StoreBox {
            dir,
            _tmp: tmp,
            child: None,
            http: String::new(),
            mqtt_port: 0,
            token,
            stderr_path: PathBuf::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        sb.launch();
        sb
    }

    /// (Re)starts the server process on the same data dir and waits for its ready line.
    pub fn launch(&mut self) {
        self.stderr_path = self.dir.join(format!(
            "stderr-{}.log",
            Instant::now().elapsed().as_nanos() ^ rand_u64()
        ));
        let stderr = std::fs::File::create(&self.stderr_path).unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .envs(base_env(&self.dir))
            .envs(self.extra_env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn storebox serve");
        let rx = stdout_lines(&mut child);
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "storebox did not become ready; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
                )
            });
        assert!(
            line.starts_with("storebox ready "),
            "unexpected first line {line:?}"
        );
        let http = line
            .split(' ')
            .find_map(|w| w.strip_prefix("http="))
            .unwrap()
            .to_string();
        let mqtt = line
            .split(' ')
            .find_map(|w| w.strip_prefix("mqtt=mqtt://"))
            .unwrap();
        self.http = http;
        self.mqtt_port = mqtt.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `secs` for the process to exit by itself.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.child.as_mut()?;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut c = self.child.take().expect("running");
        let start = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("storebox did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a one-shot command with this box's data dir and extra environment.
    pub fn cli(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .envs(base_env(&self.dir))
            .envs(self.extra_env.iter().cloned())
            .output()
            .expect("run storebox");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sets (Some) or removes (None) an extra environment variable for the next [`launch`].
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.extra_env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.extra_env.push((key.to_string(), v.to_string()));
        }
    }

    /// Descriptors the running server process has open.
    pub fn open_fds(&self) -> usize {
        let pid = self.child.as_ref().expect("running").id();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    }

    pub fn add_device(&self, id: &str, kind: &str) -> String {
        let (s, out, err) = cli(&self.dir, &["device", "add", id, "--kind", kind], None);
        assert!(s.success(), "device add: {out} {err}");
        out.lines()
            .find_map(|l| l.trim().strip_prefix("password:"))
            .expect("password line")
            .trim()
            .to_string()
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client()
            .get(format!("{}{path}", self.http))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client()
            .post(format!("{}{path}", self.http))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.join("storebox.db")).unwrap()
    }
}

impl Drop for StoreBox {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn rand_u64() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) as u128
}

/// The lines a child prints on its (piped) stdout, read on a thread and sent as they come.
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a device connection reports.
#[derive(Debug)]
pub enum Got {
    Connected,
    Message(String, Vec<u8>),
    Closed(String),
}

/// A device connection driven in the background.
pub struct Device {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Got>,
    /// SUBACKs, apart from `rx` so that waiting for one leaves the messages in `rx`.
    subacks: mpsc::UnboundedReceiver<rumqttc::SubAck>,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    /// Connects and waits for the CONNACK (or the connection closing, returned as Err).
    pub async fn connect(port: u16, id: &str, password: Option<&str>) -> Result<Device, String> {
        Self::connect_opts(port, id, password, 30, None).await
    }

    pub async fn connect_opts(
        port: u16,
        id: &str,
        password: Option<&str>,
        keepalive_s: u64,
        will: Option<rumqttc::LastWill>,
    ) -> Result<Device, String> {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(keepalive_s));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(p) = password {
            opts.set_credentials(id, p);
        }
        if let Some(w) = will {
            opts.set_last_will(w);
        }
        let (client, eventloop) = AsyncClient::new(opts, 1000);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx, suback_tx));
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Got::Connected)) => Ok(Device {
                client,
                rx,
                subacks,
                task,
            }),
            Ok(Some(Got::Closed(e))) => Err(e),
            other => Err(format!("unexpected: {other:?}")),
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    /// Subscribes and waits for the broker's SUBACK granting it: once this returns, messages
    /// published on `filter` reach this device.
    pub async fn subscribe(&mut self, filter: &str) {
        self.subscribe_nowait(filter).await;
        let ack = tokio::time::timeout(Duration::from_secs(10), self.subacks.recv())
            .await
            .unwrap_or_else(|_| panic!("no SUBACK for {filter} within 10 s"))
            .unwrap_or_else(|| panic!("connection closed before the SUBACK for {filter}"));
        assert!(
            ack.return_codes
                .iter()
                .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
            "subscription to {filter} refused: {ack:?}"
        );
    }

    /// Sends SUBSCRIBE without waiting for the answer (for subscriptions the broker refuses by
    /// closing the connection).
    pub async fn subscribe_nowait(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    /// Next message on `topic` within `secs`.
    pub async fn next_on(&mut self, topic: &str, secs: u64) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Got::Message(t, p))) if t == topic => {
                    return serde_json::from_slice(&p).ok()
                }
                Ok(Some(Got::Closed(_))) | Ok(None) | Err(_) => return None,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Waits until the broker closes this connection; returns the error text.
    pub async fn closed_within(&mut self, secs: u64) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Got::Closed(e))) => return Some(e),
                Ok(None) => return Some("eventloop ended".into()),
                Err(_) => return None,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Drops the TCP connection without DISCONNECT (like a device losing power).
    pub fn vanish(self) {
        self.task.abort();
    }
}

async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Got>,
    subacks: mpsc::UnboundedSender<rumqttc::SubAck>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = tx.send(Got::Connected);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let _ = subacks.send(ack);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(Got::Message(p.topic.clone(), p.payload.to_vec()));
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Got::Closed(e.to_string()));
                return;
            }
        }
    }
}

/// Asserts that one of `items` contains `needle`.
pub fn assert_any(items: &[String], needle: &str) {
    assert!(
        items.iter().any(|r| r.contains(needle)),
        "{needle:?} not in {items:?}"
    );
}

/// Sends a request and returns its status code.
pub async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

/// The box's /metrics text.
pub async fn metrics(sb: &StoreBox) -> String {
    reqwest::get(format!("{}/metrics", sb.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A child process killed (and reaped) when dropped, also when a test panics.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `storebox hq` process (the reference HQ) on loopback with its own data dir. Killed on drop.
/// The first launch binds port 0; relaunches reuse the same port so stores find it again.
/// The storage engine a test HQ runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database for one test HQ (dropped with it) on the server `scripts/test`
/// starts, or `STOREBOX_TEST_PG`. A server that cannot be reached fails the test.
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

fn pg_block<T>(f: impl std::future::Future<Output = T> + Send + 'static) -> T
where
    T: Send + 'static,
{
    // A thread and runtime of its own: callers may or may not be inside a runtime.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
}

impl PgDb {
    pub fn new() -> PgDb {
        let admin = std::env::var("STOREBOX_TEST_PG").unwrap_or_else(|_| {
            "postgres://storebox_test:storebox_test@127.0.0.1:5432/storebox_test".into()
        });
        let name = format!("hqit_{}", rand_u64());
        let (a, n) = (admin.clone(), name.clone());
        pg_block(async move {
            let (c, conn) = tokio_postgres::connect(&a, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is needed for the HQ tests and is not reachable at {a}: {e}; \
                         run scripts/test (it installs and starts it) or set STOREBOX_TEST_PG"
                    )
                });
            tokio::spawn(conn);
            c.batch_execute(&format!("CREATE DATABASE {n}"))
                .await
                .unwrap();
        });
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        PgDb {
            url: format!("{base}/{name}"),
            admin,
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (a, n) = (self.admin.clone(), self.name.clone());
        pg_block(async move {
            if let Ok((c, conn)) = tokio_postgres::connect(&a, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let _ = c
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))
                    .await;
            }
        });
    }
}

pub struct Hq {
    pub engine: Engine,
    pg: Option<std::sync::Arc<PgDb>>,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    child: Option<Child>,
    pub http: String,
    pub admin: String,
    listen: String,
    pub stderr_path: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Hq {
    pub fn start() -> Hq {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Hq {
        Self::start_on(Engine::Sqlite, env)
    }

    /// An HQ on `engine` (PostgreSQL: a fresh database of its own).
    pub fn start_on(engine: Engine, env: &[(&str, &str)]) -> Hq {
        let pg = (engine == Engine::Postgres).then(|| std::sync::Arc::new(PgDb::new()));
        Self::start_node(engine, pg, env)
    }

    /// Another HQ node on the same PostgreSQL database as `self` (a stateless node).
    pub fn another_node(&self) -> Hq {
        let env: Vec<(&str, &str)> = self
            .extra_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut node = Self::start_node(self.engine, self.pg.clone(), &env);
        node.admin = self.admin.clone();
        node
    }

    fn start_node(engine: Engine, pg: Option<std::sync::Arc<PgDb>>, env: &[(&str, &str)]) -> Hq {
        let tmp = tempfile::tempdir().unwrap();
        let mut hq = Hq {
            engine,
            pg,
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
            child: None,
            http: String::new(),
            admin: "test-admin-token".into(),
            listen: "127.0.0.1:0".into(),
            stderr_path: PathBuf::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        hq.launch();
        hq
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "STOREBOX_HQ_SERVER__DATA_DIR".to_string(),
                self.dir.display().to_string(),
            ),
            ("STOREBOX_HQ_SERVER__LISTEN".into(), self.listen.clone()),
            ("STOREBOX_HQ_SERVER__ADMIN_TOKEN".into(), self.admin.clone()),
            (
                "STOREBOX_STORAGE__DATA_DIR".into(),
                self.dir.join("unused-store").display().to_string(),
            ),
            ("STOREBOX_LOG__LEVEL".into(), "info".into()),
        ];
        if let Some(pg) = &self.pg {
            v.push(("STOREBOX_HQ_SERVER__DATABASE_URL".into(), pg.url.clone()));
        }
        v.extend(self.extra_env.iter().cloned());
        v
    }

    /// (Re)starts HQ and waits for its ready line.
    pub fn launch(&mut self) {
        self.stderr_path = self.dir.join(format!("hq-stderr-{}.log", rand_u64()));
        let stderr = std::fs::File::create(&self.stderr_path).unwrap();
        let mut child = Command::new(BIN)
            .arg("hq")
            .envs(self.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn storebox hq");
        let rx = stdout_lines(&mut child);
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "storebox hq did not become ready; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
                )
            });
        assert!(
            line.starts_with("storebox-hq ready "),
            "unexpected first line {line:?}"
        );
        self.http = line
            .split(' ')
            .find_map(|w| w.strip_prefix("http="))
            .unwrap()
            .to_string();
        self.listen = self.http.trim_start_matches("http://").to_string();
        self.child = Some(child);
    }

    /// Waits at most `secs` for the process to exit by itself.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let c = self.child.as_mut()?;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    // --- console ---
    /// SIGTERM and wait (at most `secs`); returns the exit status and how long the stop took.
    pub fn terminate(&mut self, secs: u64) -> (ExitStatus, Duration) {
        let mut c = self.child.take().expect("running");
        let start = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(secs) {
                let _ = c.kill();
                panic!("storebox hq did not exit within {secs} s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The environment a `storebox hq …` command needs to reach this HQ's storage.
    pub fn env_for_cli(&self) -> Vec<(String, String)> {
        self.env()
    }

    /// Registers a store; returns its token.
    pub fn add_store(&self, id: &str, group: &str) -> String {
        let mut args = vec!["hq", "store", "add", id];
        if !group.is_empty() {
            args.extend(["--group", group]);
        }
        let out = Command::new(BIN)
            .args(&args)
            .envs(self.env())
            .output()
            .expect("run storebox hq store add");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "hq store add: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.lines().last().unwrap().trim().to_string()
    }

    /// Environment for a `storebox serve` that syncs with this HQ as `store`.
    pub fn store_env(&self, store: &str, token: &str) -> Vec<(String, String)> {
        vec![
            ("STOREBOX_STORE__ID".into(), store.into()),
            ("STOREBOX_HQ__URL".into(), self.http.clone()),
            ("STOREBOX_HQ__TOKEN".into(), token.into()),
            ("STOREBOX_HQ__RETRY_MAX_SECS".into(), "1".into()),
            ("STOREBOX_HQ__POLL_WAIT_SECS".into(), "5".into()),
        ]
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.http))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.http))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Authors events for `target`; panics unless HQ accepts them. Returns the last seq.
    pub async fn author(&self, target: Value, events: Value) -> i64 {
        let (s, body) = self
            .post(
                "/hq/v1/events",
                serde_json::json!({"target": target, "events": events}),
            )
            .await;
        assert_eq!(s, 201, "authoring refused: {body}");
        body["last_seq"].as_i64().unwrap()
    }

    #[allow(dead_code)]
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Appends events for all stores straight into HQ's storage, bypassing its validation.
    pub fn inject_raw_events(&self, events: &[(&str, &str, &str)]) {
        match &self.pg {
            None => {
                let c = rusqlite::Connection::open(self.dir.join("hq.db")).unwrap();
                for (id, t, p) in events {
                    c.execute(
                        "INSERT INTO hq_events (id, type, payload, all_stores, created_ms) VALUES (?1, ?2, ?3, 1, 0)",
                        rusqlite::params![id, t, p],
                    )
                    .unwrap();
                }
            }
            Some(pg) => {
                let url = pg.url.clone();
                let events: Vec<(String, String, String)> = events
                    .iter()
                    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
                    .collect();
                pg_block(async move {
                    let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    let tx = c.transaction().await.unwrap();
                    for (id, t, p) in &events {
                        let seq: i64 = tx
                            .query_one(
                                "UPDATE hq_meta SET value = value + 1 WHERE key = 'head' RETURNING value",
                                &[],
                            )
                            .await
                            .unwrap()
                            .get(0);
                        tx.execute(
                            "INSERT INTO hq_events (seq, id, type, payload, all_stores, created_ms)
                             VALUES ($1, $2, $3, $4, true, 0)",
                            &[&seq, id, t, p],
                        )
                        .await
                        .unwrap();
                    }
                    tx.batch_execute("NOTIFY storebox_hq_feed").await.unwrap();
                    tx.commit().await.unwrap();
                });
            }
        }
    }
}

impl Drop for Hq {
    fn drop(&mut self) {
        self.kill9();
    }
}

//! Supervision of `serve`'s long-running tasks and threads. None of them is meant to end while the
//! box runs; if one ends or panics, the box is no longer what it claims to be (a dead ingest
//! acknowledges nothing, a dead scheduler announces no price change), so the first such end is
//! recorded in [`Health`] (`/readyz` names the task, the watchdog stops being fed), logged once,
//! and `serve` stops and returns an error: the process exits non-zero and systemd restarts it.
//!
//! **Test hook.** Debug builds (those `cargo test` runs) read `STOREBOX_TEST_KILL_TASK=<name>`
//! and end that task ([`KILL_AFTER`] after it started): a tokio task panics, a thread panics at
//! its next wake-up, a task spawned elsewhere is aborted. The code is behind
//! `cfg(debug_assertions)`, so release and package builds (`--release`, `--profile deb`) do not
//! contain it and ignore the variable: nobody can end a production box's tasks through its
//! environment.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinError, JoinHandle};

use super::health::Health;
use super::metrics::{Metrics, TaskLabel};

/// How long after its start the test hook ends the named task.
pub const KILL_AFTER: Duration = Duration::from_millis(1500);

/// Watches named tasks; [`Supervisor::failed`] resolves with the first that ended.
pub struct Supervisor {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<(&'static str, String)>,
    rx: mpsc::UnboundedReceiver<(&'static str, String)>,
    handles: Vec<AbortHandle>,
}

/// Reports the end of a supervised thread (cloneable into the thread).
#[derive(Clone)]
pub struct ThreadWatch {
    name: &'static str,
    stopping: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<(&'static str, String)>,
}

impl ThreadWatch {
    /// Called by the thread as it ends (normally or from a caught panic).
    pub fn ended(&self, cause: String) {
        if !self.stopping.load(Ordering::Relaxed) {
            let _ = self.tx.send((self.name, cause));
        }
    }

    /// Whether the test hook asks this thread to end now (always false in release builds).
    pub fn kill_requested(&self) -> bool {
        kill_requested(self.name)
    }
}

/// Text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

fn cause_of(r: Result<(), JoinError>) -> String {
    match r {
        Ok(()) => "ended".into(),
        Err(e) if e.is_panic() => format!("panicked: {}", panic_message(&*e.into_panic())),
        Err(_) => "was aborted".into(),
    }
}

impl Supervisor {
    pub fn new(health: Arc<Health>, metrics: Arc<Metrics>) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        Supervisor {
            health,
            metrics,
            stopping: Arc::default(),
            tx,
            rx,
            handles: Vec::new(),
        }
    }

    /// Spawns `fut` as the supervised task `name`.
    pub fn spawn<F>(&mut self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(async move {
            tokio::select! {
                () = fut => {}
                () = test_kill(name) => panic!("test hook: task {name} killed (STOREBOX_TEST_KILL_TASK)"),
            }
        });
        self.follow(name, task);
    }

    /// Supervises a task spawned elsewhere (the hook aborts it).
    pub fn watch(&mut self, name: &'static str, task: JoinHandle<()>) {
        if kill_requested_at_all(name) {
            let abort = task.abort_handle();
            tokio::spawn(async move {
                test_kill(name).await;
                abort.abort();
            });
        }
        self.follow(name, task);
    }

    fn follow(&mut self, name: &'static str, task: JoinHandle<()>) {
        self.handles.push(task.abort_handle());
        let tx = self.tx.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let cause = cause_of(task.await);
            if !stopping.load(Ordering::Relaxed) {
                let _ = tx.send((name, cause));
            }
        });
    }

    /// For a thread: it calls [`ThreadWatch::ended`] when it ends.
    pub fn thread(&self, name: &'static str) -> ThreadWatch {
        ThreadWatch {
            name,
            stopping: self.stopping.clone(),
            tx: self.tx.clone(),
        }
    }

    /// The first supervised task to end: recorded in health and metrics, logged once.
    pub async fn failed(&mut self) -> (&'static str, String) {
        let (name, cause) = match self.rx.recv().await {
            Some(f) => f,
            // `self` holds a sender, so this cannot happen; treat it as a failure anyway.
            None => ("supervisor", "channel closed".into()),
        };
        if self.health.task_failed(name, cause.clone()) {
            self.metrics
                .task_failed
                .get_or_create(&TaskLabel {
                    task: name.to_string(),
                })
                .set(1);
            tracing::error!(task = name, %cause, "a long-running task ended: storebox stops and exits non-zero so that systemd restarts it");
        }
        (name, cause)
    }

    /// Orderly shutdown begins: ends are expected from now on and no longer reported.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Aborts every task spawned or watched here (at the end of the orderly stop).
    pub fn abort_all(&self) {
        self.stopping();
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Whether the test hook names `name` (debug builds only).
fn kill_requested_at_all(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("STOREBOX_TEST_KILL_TASK").is_ok_and(|v| v == name)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}

#[cfg(debug_assertions)]
static KILL_THREAD: AtomicBool = AtomicBool::new(false);

/// For threads: true once [`kill_thread_after_delay`] has run for the hook's `name`.
fn kill_requested(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        KILL_THREAD.load(Ordering::Relaxed) && kill_requested_at_all(name)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}

/// Test hook for a thread `name`: after [`KILL_AFTER`], lets [`ThreadWatch::kill_requested`]
/// answer true and returns true, so the caller can wake the thread; returns false at once when
/// the hook does not name it (always in release builds).
pub async fn kill_thread_after_delay(name: &str) -> bool {
    if !kill_requested_at_all(name) {
        return false;
    }
    tokio::time::sleep(KILL_AFTER).await;
    #[cfg(debug_assertions)]
    KILL_THREAD.store(true, Ordering::Relaxed);
    true
}

/// Resolves [`KILL_AFTER`] from now if the hook names `name`; never otherwise (always in
/// release builds).
pub async fn test_kill(name: &'static str) {
    if kill_requested_at_all(name) {
        tokio::time::sleep(KILL_AFTER).await;
    } else {
        std::future::pending::<()>().await;
    }
}

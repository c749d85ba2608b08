//! HQ's background tasks, watched: the rollout engine, the desk notifier and this node's fleet
//! reader. Without them the node still answers HTTP while rollouts stall at their wave,
//! notifications stop or live fleet pages freeze, which is worse than a restart. So the first one
//! that panics (or, for the engine and the notifier, ends at all) stops `serve` with an error that
//! names it: the process exits non-zero, the log says why once, and systemd starts HQ again
//! (`storebox-hq.service` has `Restart=on-failure`). The fleet reader ends by itself when no
//! stream listens; only its panic counts.
//!
//! Debug builds honour the same test hook as the store's supervisor,
//! `STOREBOX_TEST_KILL_TASK=<name>` (names: `rollout-engine`, `desk-notifier`, `fleet-reader`).

use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::ops::supervise::{panic_message, test_kill};

/// Starts watched tasks (cloneable into the parts of HQ that start them later).
#[derive(Clone)]
pub struct Tasks {
    tx: mpsc::UnboundedSender<(&'static str, String)>,
}

/// Resolves with the first watched task that failed.
pub struct Failures {
    rx: mpsc::UnboundedReceiver<(&'static str, String)>,
}

/// Aborts the task when dropped (HQ's tasks end with `serve`), unless detached.
pub struct Running(Option<AbortHandle>);

impl Running {
    /// Lets the task run on its own (it ends by itself, or with the runtime).
    pub fn detach(mut self) {
        self.0 = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

impl Tasks {
    pub fn new() -> (Tasks, Failures) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Tasks { tx }, Failures { rx })
    }

    /// A task meant to run as long as HQ serves: its end, whatever the reason, is a failure.
    pub fn spawn_forever<F>(&self, name: &'static str, fut: F) -> Running
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, fut, true)
    }

    /// A task that may finish by itself; only a panic is a failure.
    pub fn spawn_may_finish<F>(&self, name: &'static str, fut: F) -> Running
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, fut, false)
    }

    fn spawn<F>(&self, name: &'static str, fut: F, forever: bool) -> Running
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = tokio::spawn(async move {
            tokio::select! {
                () = fut => {}
                () = test_kill(name) => panic!("test hook: HQ task {name} killed (STOREBOX_TEST_KILL_TASK)"),
            }
        });
        let abort = inner.abort_handle();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let cause = match inner.await {
                Ok(()) if forever => "ended".to_string(),
                Ok(()) => return,
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(&*e.into_panic())),
                Err(_) => return, // aborted: HQ is stopping
            };
            let _ = tx.send((name, cause));
        });
        Running(Some(abort))
    }
}

impl Failures {
    /// The first failed task and its cause; never resolves while every task runs.
    pub async fn first(&mut self) -> (&'static str, String) {
        match self.rx.recv().await {
            Some(f) => f,
            // Every `Tasks` is gone, so nothing can fail any more.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_or_the_end_of_a_forever_task_is_reported_with_its_name() {
        let (tasks, mut failures) = Tasks::new();
        let _a = tasks.spawn_may_finish("finishes", async {});
        let _b = tasks.spawn_forever("runs", std::future::pending());
        let _c = tasks.spawn_may_finish("panics", async { panic!("boom") });
        let (name, cause) = failures.first().await;
        assert_eq!((name, cause.as_str()), ("panics", "panicked: boom"));
        let _d = tasks.spawn_forever("engine", async {});
        assert_eq!(failures.first().await, ("engine", "ended".to_string()));
        // Dropping a task's handle aborts it; that is not a failure.
        drop(_b);
        let quiet = tokio::time::timeout(Duration::from_millis(200), failures.first()).await;
        assert!(quiet.is_err(), "{quiet:?}");
    }
}

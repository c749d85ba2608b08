//! What the box knows is wrong with itself beyond a failed request: device ingest that cannot
//! write (disk full, I/O error) and a long-running task that ended. Kept in memory, because the
//! first of these is exactly when nothing can be written to the database; shown by `/readyz`,
//! `/metrics`, `GET /api/v1/status` and the UI's overview.

use parking_lot::Mutex;
use serde::Serialize;

/// Device ingest cannot write: devices are not acknowledged until it can.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IngestFailure {
    /// When the first write of this run failed (RFC 3339).
    pub since: String,
    /// `disk_full` or `write_error`.
    pub code: &'static str,
    /// What SQLite said, for the operator.
    pub message: String,
    /// Batches that failed since `since` (each is retried).
    pub attempts: u64,
}

/// A long-running task that ended or panicked; the process exits because of it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskFailure {
    pub task: &'static str,
    pub cause: String,
}

#[derive(Default)]
pub struct Health {
    ingest: Mutex<Option<IngestFailure>>,
    task: Mutex<Option<TaskFailure>>,
}

impl Health {
    pub fn ingest_failure(&self) -> Option<IngestFailure> {
        self.ingest.lock().clone()
    }

    /// Records a failed ingest write; true if it is the first since the last success.
    pub fn ingest_failed(&self, since: String, code: &'static str, message: String) -> bool {
        let mut g = self.ingest.lock();
        match g.as_mut() {
            Some(f) => {
                f.attempts += 1;
                f.code = code;
                f.message = message;
                false
            }
            None => {
                *g = Some(IngestFailure {
                    since,
                    code,
                    message,
                    attempts: 1,
                });
                true
            }
        }
    }

    /// Clears the ingest failure; returns it if there was one.
    pub fn ingest_recovered(&self) -> Option<IngestFailure> {
        self.ingest.lock().take()
    }

    /// The first task that failed, if any.
    pub fn failed_task(&self) -> Option<TaskFailure> {
        self.task.lock().clone()
    }

    /// Records a task's end; true for the first (later ones are consequences of the shutdown).
    pub fn task_failed(&self, task: &'static str, cause: String) -> bool {
        let mut g = self.task.lock();
        if g.is_some() {
            return false;
        }
        *g = Some(TaskFailure { task, cause });
        true
    }
}

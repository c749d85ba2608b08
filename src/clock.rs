//! Time as a parameter: everything that depends on "now" takes a [`Clock`], so scheduling and
//! expiry can be tested instantly and deterministically with a [`ManualClock`].

use std::sync::Arc;

use jiff::Timestamp;
use parking_lot::Mutex;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

pub type SharedClock = Arc<dyn Clock>;

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to, for tests and simulations.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(ManualClock(Mutex::new(start)))
    }
    pub fn set(&self, t: Timestamp) {
        *self.0.lock() = t;
    }
    pub fn advance(&self, by: jiff::SignedDuration) {
        let mut t = self.0.lock();
        *t = t.checked_add(by).expect("clock overflow");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock()
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The clock `storebox serve` runs on: the system clock, except in debug builds (those `cargo
/// test` runs) when `STOREBOX_TEST_CLOCK_FILE` names a file — then [`FileClock`] (test-only:
/// release and package builds do not contain it and ignore the variable).
pub fn for_serve() -> SharedClock {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("STOREBOX_TEST_CLOCK_FILE") {
        tracing::warn!(file = %std::path::Path::new(&path).display(), "TEST CLOCK: time is read from a file (debug build)");
        return Arc::new(FileClock::new(path.into()));
    }
    system()
}

/// Test-only (debug builds): time is the RFC 3339 instant written in a file plus the real time
/// passed since the file was last modified, so a test moves a running process's clock by
/// rewriting the file. Unreadable or unparsable content falls back to the system clock.
#[cfg(debug_assertions)]
pub struct FileClock {
    path: std::path::PathBuf,
    /// The file's modification time and the instant it held.
    seen: Mutex<Option<(std::time::SystemTime, Timestamp)>>,
}

#[cfg(debug_assertions)]
impl FileClock {
    pub fn new(path: std::path::PathBuf) -> Self {
        FileClock {
            path,
            seen: Mutex::new(None),
        }
    }
}

#[cfg(debug_assertions)]
impl Clock for FileClock {
    fn now(&self) -> Timestamp {
        let Ok(modified) = std::fs::metadata(&self.path).and_then(|m| m.modified()) else {
            return Timestamp::now();
        };
        let mut seen = self.seen.lock();
        let base = match *seen {
            Some((m, t)) if m == modified => Some(t),
            _ => std::fs::read_to_string(&self.path)
                .ok()
                .and_then(|s| s.trim().parse::<Timestamp>().ok()),
        };
        let Some(base) = base else {
            return Timestamp::now();
        };
        *seen = Some((modified, base));
        let passed = std::time::SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        base.checked_add(jiff::SignedDuration::try_from(passed).unwrap_or_default())
            .unwrap_or(base)
    }
}

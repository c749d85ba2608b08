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

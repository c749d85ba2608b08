//! The systemd handshake: `READY=1` once the database is open and both listeners are bound, then a
//! watchdog ping at half the configured interval for as long as the box answers its own health
//! check. Outside systemd (no `NOTIFY_SOCKET`) these are no-ops.

use std::time::Duration;

pub fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// The watchdog interval systemd expects pings at, if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec))
    } else {
        None
    }
}

pub fn notify_watchdog() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
}

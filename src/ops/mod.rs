//! Operations: what lets store IT and support see and trust the box — metrics, logs, the audit
//! trail, and the systemd handshake (readiness and watchdog).

pub mod audit;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod supervise;
pub mod systemd;

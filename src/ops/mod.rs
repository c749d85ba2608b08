//! Operations: what lets store IT and support see and trust the box — metrics, logs, the audit
//! trail, the systemd handshake (readiness and watchdog), and the support bundle.

pub mod audit;
pub mod diag;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod supervise;
pub mod systemd;

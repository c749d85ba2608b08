//! What the store knows about its link to HQ, shared between the sync client (which updates it)
//! and the API, UI and metrics (which read it). `GET /api/v1/sync` answers [`SyncStatus`].

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct OutboxDepth {
    pub business: i64,
    pub telemetry: i64,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// An HQ URL is configured (false: the store runs standalone).
    pub configured: bool,
    /// The HQ URL (never a token).
    pub hq_url: Option<String>,
    /// The last request to HQ succeeded and no error followed it.
    pub connected: bool,
    /// The last HQ feed cursor applied.
    pub cursor: Option<i64>,
    /// HQ events known to exist after the cursor.
    pub lag_events: Option<i64>,
    /// Age of the oldest HQ event not yet applied, in seconds (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// Store events waiting to be sent to HQ.
    pub outbox: OutboxDepth,
    /// Store events dropped (telemetry past its time-to-live or size cap).
    pub outbox_dropped: i64,
    /// HQ events quarantined because they failed validation.
    pub quarantined: i64,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// The live sync status; cheap to read.
#[derive(Debug, Default)]
pub struct SyncState(Mutex<SyncStatus>);

impl SyncState {
    pub fn new(hq_url: &str) -> Self {
        SyncState(Mutex::new(SyncStatus {
            configured: !hq_url.is_empty(),
            hq_url: (!hq_url.is_empty()).then(|| hq_url.to_string()),
            ..Default::default()
        }))
    }

    pub fn snapshot(&self) -> SyncStatus {
        self.0.lock().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        f(&mut self.0.lock())
    }
}

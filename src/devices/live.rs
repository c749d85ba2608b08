//! Live device changes for the staff UI. The ingest writer decides when a device goes online or
//! offline, reports a new status or raises and clears an alert; once that batch is committed it
//! announces the device ids here, and every open Server-Sent-Events stream (`GET /api/v1/events`)
//! reads the device's committed state and pushes it to the browser. Provisioning and removal
//! through the API announce here too.
//!
//! Only ids travel on the channel, never state: a slow browser that misses some (the channel is
//! bounded) is told it lagged and reloads the whole list, so it never shows a stale state.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

/// Changes kept for slow subscribers before they are told they lagged.
const CAPACITY: usize = 1024;

/// The broadcast side of live device changes; cheap to clone.
#[derive(Clone)]
pub struct DeviceChanges {
    tx: broadcast::Sender<Arc<str>>,
    /// Set at shutdown so that open streams end and HTTP can stop at once.
    closing: Arc<watch::Sender<bool>>,
}

impl Default for DeviceChanges {
    fn default() -> Self {
        DeviceChanges {
            tx: broadcast::channel(CAPACITY).0,
            closing: Arc::new(watch::channel(false).0),
        }
    }
}

impl DeviceChanges {
    /// Announces that a device's committed state changed (no-op when nobody listens).
    pub fn notify(&self, device: &str) {
        let _ = self.tx.send(Arc::from(device));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }

    /// Open subscriptions (live UI streams).
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Ends every open stream (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`DeviceChanges::close`] was called (at once if it already was).
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_ids_and_lag_is_reported() {
        let hub = DeviceChanges::default();
        hub.notify("nobody-listens");
        let mut rx = hub.subscribe();
        assert_eq!(hub.listeners(), 1);
        hub.notify("lane-1");
        assert_eq!(&*rx.recv().await.unwrap(), "lane-1");
        for i in 0..CAPACITY + 5 {
            hub.notify(&format!("d{i}"));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        hub.close();
        tokio::time::timeout(std::time::Duration::from_secs(1), hub.closed())
            .await
            .expect("closed resolves after close");
    }
}

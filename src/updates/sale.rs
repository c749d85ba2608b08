//! The sale-in-flight guard: an install never starts while a checkout is being recorded, and no
//! checkout starts recording while the install request is being written.
//!
//! A checkout (`POST /api/v1/checkouts`) holds a shared [`SaleGuard::recording`] permit from
//! before its transaction opens until it committed; many checkouts hold one at once. The updater
//! takes the exclusive side with [`SaleGuard::try_exclusive`], which never waits: if any checkout
//! holds a permit, a sale is in flight and the install does not start (the updater re-checks at
//! its next tick). While the updater holds the exclusive side (the few milliseconds of writing
//! `request.json`), a checkout that arrives waits for it before it records.
//!
//! After the request is written, checkouts go on as usual until the root helper stops storebox.
//! A checkout is one transaction: it is either committed before the stop (the HTTP server gives
//! open requests 2 s to finish) or not at all, and then the lane gets no answer and sends it
//! again once the box is back, `checkout_id` making the repeat idempotent.

use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

#[derive(Debug, Clone, Default)]
pub struct SaleGuard(Arc<RwLock<()>>);

/// Held by a checkout while it records.
pub struct Recording(#[allow(dead_code)] OwnedRwLockReadGuard<()>);

/// Held by the updater while it writes the install request.
pub struct Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>);

impl SaleGuard {
    /// Waits only while an install request is being written.
    pub async fn recording(&self) -> Recording {
        Recording(self.0.clone().read_owned().await)
    }

    /// `None` when a checkout is being recorded right now.
    pub fn try_exclusive(&self) -> Option<Exclusive> {
        self.0.clone().try_write_owned().ok().map(Exclusive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_recording_checkout_blocks_the_install_and_the_install_request_blocks_checkouts() {
        let g = SaleGuard::default();
        let r1 = g.recording().await;
        let r2 = g.recording().await;
        assert!(g.try_exclusive().is_none(), "two sales in flight");
        drop(r1);
        assert!(g.try_exclusive().is_none(), "one sale in flight");
        drop(r2);
        let ex = g.try_exclusive().expect("no sale in flight");
        // A checkout arriving now waits until the request is written.
        let g2 = g.clone();
        let waiting = tokio::spawn(async move {
            let _r = g2.recording().await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(ex);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}

//! Sync with HQ. The store-side outbox: every event meant for HQ is first committed here, in the
//! same transaction as the change that caused it, with a store sequence number and a unique id
//! (docs/sync-protocol.md); and the shared [`state::SyncState`] that the API and UI show.

pub mod apply;
pub mod client;
pub mod outbox;
pub mod protocol;
pub mod state;

//! Sync with HQ. For now the store-side outbox: every event meant for HQ is first committed here,
//! in the same transaction as the change that caused it, with a store sequence number and a unique
//! id (docs/sync-protocol.md). The HQ client that drains it is built in the sync issue.

pub mod outbox;

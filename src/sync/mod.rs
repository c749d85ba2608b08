//! The store's side of sync with HQ (docs/sync-protocol.md): the client that long-polls HQ's feed
//! and applies each batch together with its cursor ([`apply`]), pushes the outbox in order
//! ([`client`]), and the shared [`state::SyncState`] that the API, UI and metrics show. It speaks
//! only the wire protocol ([`crate::proto`]) and knows nothing of HQ's internals.

pub mod apply;
pub mod client;
pub mod state;

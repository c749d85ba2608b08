-- Schema 7, price answers kept in memory (src/catalog/answer_cache.rs). A version of the whole
-- catalog (items, barcodes, prices), bumped once by every transaction that applies HQ events
-- (`catalog::Applier::write` at a transaction's first write: the sync client, a snapshot,
-- `storebox import`), so that a running
-- box knows a kept answer is stale whichever process wrote. Once per transaction, not per row: a
-- trigger per row would cost the catch-up of a million events a second row write each.
ALTER TABLE catalog_state ADD COLUMN catalog_version INTEGER NOT NULL DEFAULT 0;

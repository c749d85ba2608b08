-- Schema 6, price lookups. The price records of a sku are read from one index range (a covering
-- index), not from the index plus one table lookup per record: a few pages per lookup, not ~40.
CREATE INDEX prices_by_sku ON prices(sku, starts_ms, price, ends_ms, received);
DROP INDEX prices_sku;

-- A version of the stored promotions, bumped by every write to them, so that the parsed copy a
-- running box keeps in memory (src/catalog/promo_cache.rs) knows when to reload, whichever
-- process wrote (the sync client, `storebox import`, a restore).
CREATE TABLE catalog_state (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    promotions_version INTEGER NOT NULL
);
INSERT INTO catalog_state (id, promotions_version) VALUES (1, 0);
CREATE TRIGGER promotions_ins AFTER INSERT ON promotions
BEGIN UPDATE catalog_state SET promotions_version = promotions_version + 1 WHERE id = 1; END;
CREATE TRIGGER promotions_upd AFTER UPDATE ON promotions
BEGIN UPDATE catalog_state SET promotions_version = promotions_version + 1 WHERE id = 1; END;
CREATE TRIGGER promotions_del AFTER DELETE ON promotions
BEGIN UPDATE catalog_state SET promotions_version = promotions_version + 1 WHERE id = 1; END;
CREATE TRIGGER promotion_skus_ins AFTER INSERT ON promotion_skus
BEGIN UPDATE catalog_state SET promotions_version = promotions_version + 1 WHERE id = 1; END;
CREATE TRIGGER promotion_skus_del AFTER DELETE ON promotion_skus
BEGIN UPDATE catalog_state SET promotions_version = promotions_version + 1 WHERE id = 1; END;

-- Schema 6: the price records of a sku are read from one index range (a covering index), not
-- from the index plus one table lookup per record: a price lookup touches a few pages, not ~40.
CREATE INDEX prices_by_sku ON prices(sku, starts_ms, price, ends_ms, received);
DROP INDEX prices_sku;

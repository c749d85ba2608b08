-- Schema 3: catalog, effective-dated prices, promotions, checkouts.
CREATE TABLE items (
    sku        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    department TEXT,
    unit       TEXT NOT NULL CHECK (unit IN ('each', 'kg')),
    attributes TEXT NOT NULL DEFAULT '{}',
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX items_department ON items(department);
CREATE INDEX items_name ON items(name COLLATE NOCASE);

CREATE TABLE barcodes (
    barcode TEXT PRIMARY KEY,
    sku     TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX barcodes_sku ON barcodes(sku);

-- `received` orders records that start at the same instant (the last received wins).
CREATE TABLE prices (
    id        TEXT PRIMARY KEY,
    sku       TEXT NOT NULL,
    price     INTEGER NOT NULL,
    starts_ms INTEGER NOT NULL,
    ends_ms   INTEGER,
    received  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX prices_sku ON prices(sku, starts_ms);
CREATE INDEX prices_starts ON prices(starts_ms);
CREATE INDEX prices_ends ON prices(ends_ms) WHERE ends_ms IS NOT NULL;

CREATE TABLE promotions (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    params     TEXT NOT NULL,
    skus       TEXT NOT NULL,
    department TEXT,
    starts_ms  INTEGER NOT NULL,
    ends_ms    INTEGER,
    received   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX promotions_department ON promotions(department) WHERE department IS NOT NULL;

CREATE TABLE promotion_skus (
    sku          TEXT NOT NULL,
    promotion_id TEXT NOT NULL,
    PRIMARY KEY (sku, promotion_id)
) WITHOUT ROWID;
CREATE INDEX promotion_skus_promo ON promotion_skus(promotion_id);

-- Checkouts recorded on the box, idempotent on the client's checkout id.
CREATE TABLE checkouts (
    checkout_id TEXT PRIMARY KEY,
    lane        TEXT NOT NULL,
    result      TEXT NOT NULL,
    total       INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX checkouts_created ON checkouts(created_ms);

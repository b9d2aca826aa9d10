-- v2 (as sqlite/0002): webhook hints, enable/disable switch, debtor register and sequences;
-- batches learn their run and remote (API) id; delivered-per-year lookups get an index.

ALTER TABLE batches ADD COLUMN run_id BIGINT REFERENCES runs (id);
ALTER TABLE batches ADD COLUMN remote_id TEXT;
CREATE INDEX batches_by_delivery ON batches (mapping, delivered_at) WHERE status = 'delivered';

CREATE TABLE hints (
    mapping      TEXT NOT NULL,
    shop_id      TEXT NOT NULL,
    event        TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (mapping, shop_id)
);

CREATE TABLE mapping_switch (
    mapping     TEXT PRIMARY KEY,
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    changed_at  TEXT NOT NULL,
    reason      TEXT
);

-- key_hash: a keyed hash (HMAC) of the normalised matching key, never the key itself.
CREATE TABLE debtors (
    mapping        TEXT NOT NULL,
    key_hash       TEXT NOT NULL,
    debtor_number  TEXT NOT NULL,
    PRIMARY KEY (mapping, key_hash)
);

CREATE TABLE sequences (
    mapping  TEXT NOT NULL,
    name     TEXT NOT NULL,
    value    BIGINT NOT NULL,
    PRIMARY KEY (mapping, name)
);

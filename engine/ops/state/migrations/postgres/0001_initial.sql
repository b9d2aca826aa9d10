-- v1: runs, batches with their orders (the outbox), quarantine.
-- The same tables as sqlite/0001_initial.sql: the store's statements are shared by both
-- back-ends, so columns, names and meanings match; timestamps are fixed-width UTC ISO text
-- (they sort as they compare) and counts a JSON object, as in SQLite.

CREATE TABLE schema_version (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL
);

CREATE TABLE runs (
    id           BIGSERIAL PRIMARY KEY,
    mapping      TEXT NOT NULL,
    mode         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT,
    counts       TEXT NOT NULL DEFAULT '{}',   -- JSON object name -> integer
    report_path  TEXT
);
CREATE INDEX runs_by_mapping ON runs (mapping, id);

CREATE TABLE batches (
    id            TEXT PRIMARY KEY,
    mapping       TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'discarded')),
    created_at    TEXT NOT NULL,
    delivered_at  TEXT,
    discarded_at  TEXT,
    checksum      TEXT
);
CREATE INDEX batches_by_status ON batches (mapping, status, created_at);

-- rowid: the insertion order (SQLite's implicit rowid), so that a batch lists its orders in
-- the order they were written. live = 1 while the batch is pending or delivered; NULL once it
-- is discarded. The partial unique index makes "one order, one live batch" a property of the
-- database, not only of the code that checks it first.
CREATE TABLE batch_orders (
    rowid       BIGSERIAL NOT NULL,
    batch_id    TEXT NOT NULL REFERENCES batches (id),
    mapping     TEXT NOT NULL,
    shop_id     TEXT NOT NULL,
    number      TEXT NOT NULL,
    order_date  TEXT NOT NULL,
    live        INTEGER CHECK (live IS NULL OR live = 1),
    PRIMARY KEY (batch_id, shop_id)
);
CREATE UNIQUE INDEX batch_orders_one_live ON batch_orders (mapping, shop_id) WHERE live = 1;

CREATE TABLE quarantine (
    mapping     TEXT NOT NULL,
    shop_id     TEXT NOT NULL,
    number      TEXT,
    reason      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'dropped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    dropped_at  TEXT,
    PRIMARY KEY (mapping, shop_id)
);

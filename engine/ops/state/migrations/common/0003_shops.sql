-- v3: the shops registry of hosted mode (spec/hosted.md): one row per shop that one provider
-- runs. Every secret of a shop (CCV key pair, Asperion credentials, licence code, the shop's
-- debtor-register key) is in `secrets`, sealed with MAPPER_MASTER_KEY (engine/hosted/crypto.py):
-- a dump of this table shows none of them. A shop's state rows are those of the scope
-- '<shop id>/<mapping name>' in the other tables. One shop on SQLite leaves this table empty.

CREATE TABLE shops (
    id               TEXT PRIMARY KEY,          -- short, stable, shown to the operator
    name             TEXT NOT NULL,
    api_root         TEXT NOT NULL,             -- the shop's own address (https)
    status           TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'removed')),
    plan             TEXT NOT NULL CHECK (plan IN ('basis', 'plus')),
    destination      TEXT NOT NULL CHECK (destination IN ('outbox', 'api')),
    run_minute       INTEGER NOT NULL,          -- its daily run, minutes after 00:00 Europe/Amsterdam
    next_run_at      TEXT,                      -- UTC ISO; NULL: not scheduled
    contact_name     TEXT,
    contact_email    TEXT,
    secrets          TEXT,                      -- sealed JSON; NULL once the shop is removed
    api_public_hash  TEXT UNIQUE,               -- keyed hash of its CCV public key (App Store look-ups)
    status_reason    TEXT,
    run_on_hint      INTEGER NOT NULL DEFAULT 0,   -- 1: a webhook hint enqueues a run at once
    failures         INTEGER NOT NULL DEFAULT 0,   -- consecutive failed runs
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    changed_at       TEXT NOT NULL
);
CREATE INDEX shops_due ON shops (next_run_at) WHERE status = 'active';

-- What `mapper db upgrade` applied of the job queue's own schema (procrastinate's).
CREATE TABLE queue_schema (
    package     TEXT NOT NULL,
    version     TEXT NOT NULL,
    applied_at  TEXT NOT NULL
);

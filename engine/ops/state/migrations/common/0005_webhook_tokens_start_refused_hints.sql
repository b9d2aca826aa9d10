-- v5: webhooks are authenticated and hints are bounded (issue "nothing lost, nothing let in").
-- webhook_tokens: one row per subscription; only a SHA-256 of its secret address token is kept,
-- never the token. connector_start: the earliest order creation date the connector considers on
-- its own (a hint for an older order is refused; a back-fill says --since). A hint whose look-up
-- the shop refused (a 4xx other than 404) is kept as refused, with the answer, not retried.

CREATE TABLE webhook_tokens (
    token_hash  TEXT PRIMARY KEY,
    mapping     TEXT NOT NULL,
    event       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE connector_start (
    mapping      TEXT PRIMARY KEY,
    start_date   TEXT NOT NULL,
    recorded_at  TEXT NOT NULL
);

ALTER TABLE hints ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE hints ADD COLUMN reason TEXT;

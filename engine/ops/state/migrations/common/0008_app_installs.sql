-- v8: the CCV Shop App Store (spec/hosted.md §2) and the operator's pages.
--
-- app_installs: one row per App Store installation, from the handshake on. The key pair CCV
-- sent is sealed with MAPPER_MASTER_KEY until the owner's form creates the shop (it then lives
-- in shops.secrets) and deleted on uninstall; the row stays as the install's history, found by
-- a hash of the public key (a second handshake for a known key is refused: nothing is signed
-- with a time, so that is how a replay is told).
CREATE TABLE app_installs (
    api_public_hash  TEXT PRIMARY KEY,
    variant          TEXT NOT NULL CHECK (variant IN ('basis', 'plus')),
    api_root         TEXT NOT NULL,
    return_url       TEXT NOT NULL,
    sealed           TEXT,                 -- sealed {api_public, api_secret}; NULL once used or removed
    shop_id          TEXT,                 -- the shop the form created
    status           TEXT NOT NULL CHECK (status IN ('handshake', 'installed', 'uninstalled')),
    received_at      TEXT NOT NULL,
    changed_at       TEXT NOT NULL
);

-- Failed logins on the operator pages, per client: the throttle counts them (and a success
-- for that client clears them). Kept for a day.
CREATE TABLE admin_login_failures (
    client  TEXT NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX admin_login_failures_by_client ON admin_login_failures (client, at);

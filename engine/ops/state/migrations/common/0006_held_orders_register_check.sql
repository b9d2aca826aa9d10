-- v6: orders held by the plan's limit are remembered (id, number and date only) and delivered
-- when the limit allows, whatever their age; the debtor register remembers a check value of
-- the key its hashes were made with (an HMAC of a fixed label: never the key), so that a run
-- with another key stops instead of starting an empty register.

CREATE TABLE held (
    mapping     TEXT NOT NULL,
    shop_id     TEXT NOT NULL,
    number      TEXT NOT NULL,
    order_date  TEXT NOT NULL,
    held_at     TEXT NOT NULL,
    PRIMARY KEY (mapping, shop_id)
);

CREATE TABLE register_check (
    mapping      TEXT PRIMARY KEY,
    check_value  TEXT NOT NULL,
    recorded_at  TEXT NOT NULL
);

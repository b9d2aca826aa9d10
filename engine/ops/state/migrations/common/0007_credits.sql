-- v7: credit notes (bookkeeping.md 8.4). One row per credit the shop showed for a delivered
-- order, keyed by the id it is delivered under (<order id>/credit/<key>), with what it took
-- off the order (incl. VAT, a decimal text) and what became of it:
--   booked   its credit note is pending or delivered (batch_orders says which)
--   settled  nothing was left to credit (earlier credits took it all): nothing to book
--   flagged  it credits more than is left: reported for the bookkeeper, not booked
--   waiting  its order never went out: reported once, booked if the order goes out later
-- Credit notes are not invoices of the plan: delivered_count leaves them out.

CREATE TABLE credits (
    mapping      TEXT NOT NULL,
    credit_id    TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    amount       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('booked', 'settled', 'flagged', 'waiting')),
    reason       TEXT,
    recorded_at  TEXT NOT NULL,
    PRIMARY KEY (mapping, credit_id)
);
CREATE INDEX credits_by_order ON credits (mapping, order_id);

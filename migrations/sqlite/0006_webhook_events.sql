-- Webhook deliveries from Meta (issue 13), stored raw before the 200 is sent: the body exactly as
-- received (its signature was verified over these bytes), when it arrived, and the first
-- change's `field` (a bounded label). A delivery Meta sends again (it retries for up to 7 days)
-- has the same body, hence the same `body_sha256`: it is stored once and counted in
-- `deliveries`. `receipt` is what the receiver made of it (accepted, malformed, unknown_field).
-- Processing (history, alerts) happens later: it takes the rows whose `processed_at` is NULL, in
-- `id` order, and sets `processed_at` and `outcome`.
CREATE TABLE webhook_events (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    body BLOB NOT NULL,
    body_sha256 TEXT NOT NULL UNIQUE,
    field TEXT,
    receipt TEXT NOT NULL,
    signature_verified INTEGER NOT NULL DEFAULT 1,
    deliveries INTEGER NOT NULL DEFAULT 1,
    last_received_at TEXT NOT NULL,
    processed_at TEXT,
    outcome TEXT
);
CREATE INDEX webhook_events_unprocessed ON webhook_events (id) WHERE processed_at IS NULL;

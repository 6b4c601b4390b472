-- Facts learnt from webhook deliveries (issue 13 part 2): the latest value of one field of one
-- target as Meta pushed it, with the time Meta gave it (`entry[].time`, unix seconds). Meta does
-- not guarantee the order of deliveries, so a fact older than the stored one never replaces it,
-- and an equal one changes nothing. A different, newer value replaces the row and writes one
-- history row (poll_run_id NULL). `expires_at` (unix seconds) is set on a restriction with an
-- expiry: once it passes, the processing step records the fact "none".
CREATE TABLE facts (
    kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    detail TEXT,
    event_time INTEGER NOT NULL,
    expires_at INTEGER,
    recorded_at TEXT NOT NULL,
    webhook_event_id INTEGER,
    PRIMARY KEY (kind, target_id, field)
);
CREATE INDEX facts_expiring ON facts (expires_at) WHERE expires_at IS NOT NULL;

-- Alerts and their email delivery.
--
-- alert_state: what is currently "open" per target and topic (quality, status, health, ...), so a
--   recovery is announced only after an alert, reminders know what is still bad, and a restart
--   with unchanged state sends nothing.
-- alerts: every notification-worthy transition, written in the same transaction as the history
--   row it comes from; `digested` flips when it has been put into the outbox.
-- outbox: one row per email per recipient, kept until the SMTP server accepted it (or it was
--   refused for good / grew too old). The Message-ID is fixed at creation, so a resend after a
--   crash carries the same id.
-- source_state: consecutive failed cycles per source, for "monitoring blind".

CREATE TABLE alert_state (
    target_id    TEXT NOT NULL,
    topic        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    value        TEXT,
    opened_at    TEXT NOT NULL,
    last_sent_at TEXT NOT NULL,
    PRIMARY KEY (target_id, topic)
);

CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at     TEXT NOT NULL,
    -- phone_number | waba | source
    kind           TEXT NOT NULL,
    target_id      TEXT NOT NULL,
    topic          TEXT NOT NULL,
    -- critical | warning | improving | resolved | reminder
    severity       TEXT NOT NULL,
    field          TEXT NOT NULL,
    old            TEXT,
    new            TEXT,
    -- when the previous value was first observed (how long it had lasted)
    previous_since TEXT,
    detail         TEXT,
    digested       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alerts_undigested ON alerts (digested, id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient       TEXT NOT NULL,
    message_id      TEXT NOT NULL UNIQUE,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    references_hdr  TEXT,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- pending | sent | failed | abandoned
    state           TEXT NOT NULL DEFAULT 'pending',
    last_error      TEXT,
    sent_at         TEXT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

CREATE TABLE source_state (
    source               TEXT PRIMARY KEY NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    blind                INTEGER NOT NULL DEFAULT 0,
    reason               TEXT,
    since                TEXT
);

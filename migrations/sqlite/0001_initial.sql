-- The current state of every monitored target, the history of every change, and a record of
-- every poll. Timestamps are RFC 3339 UTC text with milliseconds ("2026-01-02T03:04:05.006Z"),
-- which sorts correctly as text. Migrations are append-only: never edit this file once released.

CREATE TABLE wabas (
    id                           TEXT PRIMARY KEY NOT NULL,
    source                       TEXT NOT NULL,
    business_id                  TEXT,
    name                         TEXT,
    account_review_status        TEXT,
    business_verification_status TEXT,
    business_messaging_limit     TEXT,
    health                       TEXT,
    health_entities              TEXT,
    ownership_type               TEXT,
    present                      INTEGER NOT NULL DEFAULT 1,
    first_seen_at                TEXT NOT NULL,
    last_polled_at               TEXT NOT NULL,
    last_changed_at              TEXT NOT NULL
);
CREATE INDEX wabas_business ON wabas (business_id);

CREATE TABLE phone_numbers (
    id                       TEXT PRIMARY KEY NOT NULL,
    source                   TEXT NOT NULL,
    waba_id                  TEXT,
    display_phone_number     TEXT,
    verified_name            TEXT,
    quality_rating           TEXT,
    status                   TEXT,
    messaging_limit_tier     TEXT,
    business_messaging_limit TEXT,
    health                   TEXT,
    health_entities          TEXT,
    name_status              TEXT,
    code_verification_status TEXT,
    throughput               TEXT,
    account_mode             TEXT,
    present                  INTEGER NOT NULL DEFAULT 1,
    first_seen_at            TEXT NOT NULL,
    last_polled_at           TEXT NOT NULL,
    last_changed_at          TEXT NOT NULL
);
CREATE INDEX phone_numbers_waba ON phone_numbers (waba_id);

CREATE TABLE poll_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    -- running | ok | partial | failed | abandoned
    outcome     TEXT NOT NULL,
    calls       INTEGER NOT NULL DEFAULT 0,
    requests    INTEGER NOT NULL DEFAULT 0,
    wabas       INTEGER NOT NULL DEFAULT 0,
    numbers     INTEGER NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0,
    changes     INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX poll_runs_source ON poll_runs (source, id);

CREATE TABLE history (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- phone_number | waba
    kind        TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    field       TEXT NOT NULL,
    old         TEXT,
    new         TEXT,
    observed_at TEXT NOT NULL,
    poll_run_id INTEGER REFERENCES poll_runs (id)
);
CREATE INDEX history_target ON history (target_id, seq);
CREATE INDEX history_observed ON history (observed_at);

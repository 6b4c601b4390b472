-- Message templates of the monitored WABAs (issue 14): the latest state of each, as the last
-- poll or template webhook gave it. Tracked fields (status, quality_score, category, presence)
-- write history rows with kind = 'template' when they change; name and language describe it.
-- `state_time` (unix seconds) is when that state began to be known: the poll that last changed
-- it, or a webhook's `entry[].time`; a webhook older than it never moves the state backwards.
CREATE TABLE templates (
    id                TEXT PRIMARY KEY NOT NULL,
    source            TEXT NOT NULL,
    waba_id           TEXT NOT NULL,
    name              TEXT,
    language          TEXT,
    status            TEXT,
    quality           TEXT,
    category          TEXT,
    rejected_reason   TEXT,
    previous_category TEXT,
    present           INTEGER NOT NULL DEFAULT 1,
    state_time        INTEGER NOT NULL,
    -- A fingerprint of the last poll observation merged into the row (NULL after a webhook
    -- changed it): a poll whose observation has the same fingerprint changes nothing, so an
    -- unchanged fleet is compared without reading its rows.
    obs_hash          INTEGER,
    first_seen_at     TEXT NOT NULL,
    last_polled_at    TEXT NOT NULL,
    last_changed_at   TEXT NOT NULL
);
CREATE INDEX templates_waba ON templates (waba_id);

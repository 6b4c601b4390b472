-- Routing, silences, escalation and webhook receivers (issue 15).
--
-- The outbox carries webhook deliveries too: `channel` is 'email' (recipient = an address) or
-- 'webhook' (recipient = the URL, body = the payload, content_type its type); an email may carry
-- an HTML alternative next to its plain text.
ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
ALTER TABLE outbox ADD COLUMN content_type TEXT;
ALTER TABLE outbox ADD COLUMN html TEXT;

-- An alert recorded while a silence matched its target: digested, never sent.
ALTER TABLE alerts ADD COLUMN silenced INTEGER NOT NULL DEFAULT 0;

-- When an open critical alert was escalated (sent to [alerts] escalate_to), once.
ALTER TABLE alert_state ADD COLUMN escalated_at TEXT;

-- Silences: while one is active (starts_at <= now < ends_at, not expired early), alerts of the
-- targets it matches are recorded but not sent. `matchers` is JSON
-- {"wabas":[..],"numbers":[..],"businesses":[..],"sources":[..]}: a target matches when it
-- matches any listed value. Who, when and why are kept (audit); `end_handled` is set once the
-- end was dealt with (one email per target still bad).
CREATE TABLE silences (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers    TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    comment     TEXT NOT NULL,
    author      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expired_at  TEXT,
    expired_by  TEXT,
    end_handled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX silences_ends ON silences (ends_at);

-- Email sends that the daemon did not live to finish (issue 11). An attempt is counted
-- (`attempts`, `last_attempt_at`) and marked in flight BEFORE the SMTP conversation starts, in
-- its own commit; its outcome clears `in_flight`. A row the delivery worker finds still in
-- flight was interrupted (the daemon was killed or crashed during that send): it counts in
-- `interrupted_attempts`, and a message whose sends keep dying with the daemon is abandoned
-- instead of being sent again and again.
ALTER TABLE outbox ADD COLUMN last_attempt_at TEXT;
ALTER TABLE outbox ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN interrupted_attempts INTEGER NOT NULL DEFAULT 0;

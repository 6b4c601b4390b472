-- The fleet API (issue 16): numbers and WABAs added through `POST /api/accounts`, polled with
-- the config's targets every cycle.
--
-- `kind` is 'phone_number' (target_id = the phone-number id) or 'waba' (the whole WABA).
-- `source` names the [[meta]] source that polls it (NULL: the first one). `token` is the
-- per-account access token sealed with [daemon] secret_key_file (XChaCha20-Poly1305: 24-byte
-- nonce, then ciphertext and tag, bound to target_id); `token_hint` its first 4 characters,
-- for the masked display. A removed account keeps its row (removed_at, removed_by) and its
-- history; only one row per target is active.
CREATE TABLE managed_accounts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    waba_id     TEXT,
    name        TEXT NOT NULL,
    source      TEXT,
    token       BLOB,
    token_hint  TEXT,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    removed_at  TEXT,
    removed_by  TEXT
);
CREATE UNIQUE INDEX managed_accounts_active ON managed_accounts (target_id) WHERE removed_at IS NULL;

-- Every write of the fleet API: who (the API token's name, "api"), when, what (add, update,
-- remove) and which target; `detail` says what changed, never a token.
CREATE TABLE managed_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    target_id TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX managed_audit_target ON managed_audit (target_id, id);

-- A known value sealed with [daemon] secret_key_file when the first token was stored: at start,
-- a missing or different key is refused before any token is needed.
CREATE TABLE secret_key_check (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    sealed     BLOB NOT NULL,
    created_at TEXT NOT NULL
);

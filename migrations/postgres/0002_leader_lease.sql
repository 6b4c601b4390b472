-- The leader lease of a highly available pair (PostgreSQL only): one row per lease name, held
-- by one daemon until `expires_at` (the database server's clock). A daemon takes it when it is
-- free or expired and renews it while it holds it; `term` grows by one at every change of
-- holder, so a write can be fenced by the term it was started under.
CREATE TABLE leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    term        BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

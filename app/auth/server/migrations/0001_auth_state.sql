-- The authorization server's short-lived state (app/auth/server/pg_store.py): codes, launch ids, refresh
-- tokens and their families, revocations, seen client-assertion jti, login sessions, sign-in counters.
-- Keys of bearer secrets are their SHA-256; `expires` is seconds since the epoch; expired rows are purged.
CREATE TABLE auth_state (
    kind text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value jsonb NOT NULL,
    expires double precision NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX auth_state_expires ON auth_state (expires);

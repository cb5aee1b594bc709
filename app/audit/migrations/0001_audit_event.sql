-- The audit trail (app/audit/pg_store.py): one row per AuditEvent, append-only. Text columns compare and
-- sort byte by byte (COLLATE "C"), as SQLite's do: searches and their order are the same in both stores.
CREATE TABLE audit_event (
    id text COLLATE "C" PRIMARY KEY,
    recorded text COLLATE "C" NOT NULL,
    patient text COLLATE "C",
    client_id text COLLATE "C",
    outcome text NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX audit_patient ON audit_event (patient, recorded);
CREATE INDEX audit_recorded ON audit_event (recorded);
CREATE INDEX audit_client ON audit_event (client_id, recorded);

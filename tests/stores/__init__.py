"""The state stores against real servers: the audit trail (SQLite, PostgreSQL) and the authorization
server's state (SQLite, Redis, PostgreSQL), their shared semantics, concurrency and migrations."""

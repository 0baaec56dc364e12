-- The first shape of the table (raw tokens); version 2 replaces it.
CREATE TABLE api_sessions (
    token TEXT PRIMARY KEY NOT NULL,
    expires_at DATETIME NOT NULL
) WITHOUT ROWID;

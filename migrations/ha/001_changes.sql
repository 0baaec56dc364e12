-- rportd's own file: the change log of file-held replicated data and of changes
-- received from a primary (SQLite-held data logs in its own file).
CREATE TABLE IF NOT EXISTS rportd_changes (
    seq INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT,
    at TEXT NOT NULL
);

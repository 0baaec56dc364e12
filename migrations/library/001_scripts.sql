CREATE TABLE scripts (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at DATE NOT NULL,
    created_by TEXT NOT NULL,
    interpreter TEXT,
    is_sudo INTEGER(1) NOT NULL DEFAULT 0,
    cwd TEXT,
    script TEXT NOT NULL
);
CREATE UNIQUE INDEX unique_name ON scripts (name);
CREATE INDEX name ON scripts (name);

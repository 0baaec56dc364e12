CREATE TABLE commands (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at DATE NOT NULL,
    created_by TEXT NOT NULL,
    updated_at DATE NOT NULL,
    updated_by TEXT NOT NULL,
    cmd TEXT NOT NULL
);
CREATE UNIQUE INDEX commands__unique_name ON commands (name);

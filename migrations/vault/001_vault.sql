CREATE TABLE "values" (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL DEFAULT 0,
    required_group TEXT,
    created_at DATE NOT NULL,
    created_by TEXT NOT NULL,
    updated_at DATE NOT NULL,
    updated_by TEXT,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    type TEXT NOT NULL,
    CONSTRAINT unique_client_id_key UNIQUE (client_id, key)
);
CREATE TABLE status (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    db_status TEXT NOT NULL,
    enc_check TEXT,
    dec_check TEXT
);

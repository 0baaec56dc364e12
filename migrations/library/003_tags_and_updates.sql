ALTER TABLE scripts ADD updated_by TEXT NOT NULL DEFAULT '';
ALTER TABLE scripts ADD updated_at DATE NOT NULL DEFAULT '';
UPDATE scripts SET updated_by = created_by, updated_at = created_at;
ALTER TABLE scripts ADD tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE commands ADD tags TEXT NOT NULL DEFAULT '[]';

ALTER TABLE api_token RENAME TO api_tokens;
ALTER TABLE api_tokens ADD name TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX api_tokens_unique_name ON api_tokens (username, name);

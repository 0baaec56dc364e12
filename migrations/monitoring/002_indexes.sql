CREATE INDEX IF NOT EXISTS measurements_timestamp ON measurements (timestamp);
CREATE INDEX IF NOT EXISTS measurements_client_id ON measurements (client_id);

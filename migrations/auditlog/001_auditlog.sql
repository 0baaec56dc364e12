CREATE TABLE auditlog (
    timestamp DATE NOT NULL,
    application TEXT NOT NULL,
    action TEXT NOT NULL,
    username TEXT,
    remote_ip TEXT,
    affected_id TEXT,
    client_id TEXT,
    client_hostname TEXT,
    request TEXT,
    response TEXT
);
CREATE INDEX idx_auditlog_main ON auditlog (timestamp, application, action, affected_id);
CREATE INDEX idx_auditlog_client_id ON auditlog (client_id);
CREATE INDEX idx_auditlog_client_hostname ON auditlog (client_hostname);
CREATE INDEX idx_auditlog_username ON auditlog (username);
CREATE INDEX idx_auditlog_remote_ip ON auditlog (remote_ip);

-- The schema of authsvc 0.1 (before versioned migrations), unchanged: IF NOT EXISTS lets a
-- file made by that version pass through this step as it is.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS data_keys (
    tenant TEXT PRIMARY KEY,
    master_key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    methods TEXT NOT NULL DEFAULT '[]',
    opted_out INTEGER NOT NULL DEFAULT 0,
    consent_version TEXT NOT NULL DEFAULT '',
    consent_ms INTEGER NOT NULL DEFAULT 0,
    registered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, customer_id)
);
CREATE TABLE IF NOT EXISTS customer_state (
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    blob BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, customer_id, name),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS service_secrets (
    name TEXT PRIMARY KEY,
    blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS assertion_uses (
    jti TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    uses INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, id);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    modality TEXT NOT NULL,
    encoder_id TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    digest TEXT NOT NULL,
    key_id TEXT NOT NULL,
    blob BLOB NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id) ON DELETE CASCADE,
    UNIQUE (tenant, customer_id, modality, encoder_id, digest)
);
CREATE INDEX IF NOT EXISTS templates_by_customer ON templates (tenant, customer_id, modality);

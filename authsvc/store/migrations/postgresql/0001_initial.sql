-- The schema of authsvc 0.1, in PostgreSQL's types: the same tables, keys and cascades as
-- SQLite's 0001 (blobs are BYTEA, times BIGINT epoch milliseconds, flags INTEGER 0/1).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE data_keys (
    tenant TEXT PRIMARY KEY,
    master_key_id TEXT NOT NULL,
    wrapped BYTEA NOT NULL
);
CREATE TABLE customers (
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    methods TEXT NOT NULL DEFAULT '[]',
    opted_out INTEGER NOT NULL DEFAULT 0,
    consent_version TEXT NOT NULL DEFAULT '',
    consent_ms BIGINT NOT NULL DEFAULT 0,
    registered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, customer_id)
);
CREATE TABLE customer_state (
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    blob BYTEA NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, customer_id, name),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id) ON DELETE CASCADE
);
CREATE TABLE service_secrets (
    name TEXT PRIMARY KEY,
    blob BYTEA NOT NULL
);
CREATE TABLE assertion_uses (
    jti TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    uses INTEGER NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant, id);
CREATE TABLE templates (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    modality TEXT NOT NULL,
    encoder_id TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    digest TEXT NOT NULL,
    key_id TEXT NOT NULL,
    blob BYTEA NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL,
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id) ON DELETE CASCADE,
    UNIQUE (tenant, customer_id, modality, encoder_id, digest)
);
CREATE INDEX templates_by_customer ON templates (tenant, customer_id, modality);

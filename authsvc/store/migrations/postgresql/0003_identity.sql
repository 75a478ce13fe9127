-- Who may call the service: provisioned tenants (with the sector they were created with),
-- credentials (API keys stored only as a hash, client-certificate identities) and the
-- per-tenant hash chain of the audit trail.
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    sector TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
-- Tenants that hold data from before provisioning existed are kept, as 'general' (a policy
-- file may raise the sector; the service records the raise at start).
INSERT INTO tenants (name, sector, created_ms, created_by)
    SELECT DISTINCT tenant, 'general', 0, 'migration' FROM customers WHERE true
    ON CONFLICT (name) DO NOTHING;
INSERT INTO tenants (name, sector, created_ms, created_by)
    SELECT DISTINCT tenant, 'general', 0, 'migration' FROM data_keys WHERE true
    ON CONFLICT (name) DO NOTHING;
CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    -- '' for a platform-wide principal.
    tenant TEXT NOT NULL,
    -- 'api_key' (secret_hash set) or 'certificate' (subject set).
    kind TEXT NOT NULL,
    secret_hash TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    roles TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_ms BIGINT NOT NULL DEFAULT 0,
    revoked_ms BIGINT NOT NULL DEFAULT 0,
    last_used_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX credentials_by_tenant ON credentials (tenant, id);
CREATE UNIQUE INDEX credentials_by_subject ON credentials (subject) WHERE kind = 'certificate' AND revoked_ms = 0;
-- Each audit row carries the hash of the tenant's previous row and its own (HMAC under a key
-- derived from the tenant's data key); audit_heads holds the newest hash under that key too, so
-- a removed tail is detected. Rows from before this step are unchained; every later one is.
ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN row_hash TEXT NOT NULL DEFAULT '';
CREATE TABLE audit_heads (
    tenant TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL,
    last_hash TEXT NOT NULL,
    head_mac TEXT NOT NULL DEFAULT ''
);
INSERT INTO meta (key, value) SELECT 'audit_chain_from', CAST(COALESCE(MAX(id), 0) + 1 AS TEXT) FROM audit;

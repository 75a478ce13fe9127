-- Known fraudsters (issue 11): per tenant, named watchlists of sealed voiceprints, screened
-- 1:N on every verification and enrollment. watchlist_versions counts every change of a
-- tenant's lists, so each node reloads its in-memory index only when it moved.
CREATE TABLE watchlists (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE fraudsters (
    tenant TEXT NOT NULL,
    watchlist TEXT NOT NULL,
    fraudster_id TEXT NOT NULL,
    encoder_id TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    key_id TEXT NOT NULL,
    blob BYTEA NOT NULL,
    samples INTEGER NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant, watchlist, fraudster_id)
);
CREATE TABLE watchlist_versions (
    tenant TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

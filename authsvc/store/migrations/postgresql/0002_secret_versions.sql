-- Service secrets (the assertion key ring) change by compare-and-swap on a version, so two
-- nodes rotating at once cannot overwrite each other; expired assertion ids are purged by time.
ALTER TABLE service_secrets ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS assertion_uses_by_expiry ON assertion_uses (expires_ms);

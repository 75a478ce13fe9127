-- Retention (issue 13). last_active_ms: the customer's last enrollment or successful
-- authentication, from which their biometric templates expire after the tenant's retention_days;
-- expired_ms marks a customer whose templates expired (their calls answer EXPIRED, not
-- NOT_ENROLLED, until they enroll again). Existing customers start from the latest of their
-- creation, their newest template and their last enrollment or assertion in the audit trail, so
-- an upgrade never erases a customer who authenticated recently.
ALTER TABLE customers ADD COLUMN last_active_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE customers ADD COLUMN expired_ms INTEGER NOT NULL DEFAULT 0;
UPDATE customers SET last_active_ms = MAX(created_ms, COALESCE((
    SELECT MAX(t.created_ms) FROM templates t
    WHERE t.tenant = customers.tenant AND t.customer_id = customers.customer_id), 0));
UPDATE customers SET last_active_ms = MAX(customers.last_active_ms, a.latest)
FROM (SELECT tenant, customer_id, MAX(time_ms) AS latest FROM audit
      WHERE action IN ('assertion.issue', 'enroll.voice', 'enroll.keystrokes', 'enroll.passive')
      AND outcome IN ('issued', 'added', 'completed')
      GROUP BY tenant, customer_id) AS a
WHERE a.tenant = customers.tenant AND a.customer_id = customers.customer_id;
CREATE INDEX customers_by_activity ON customers (tenant, last_active_ms);
-- Audit retention: the rows up to trim_id were deleted; trim_hash is the last deleted row's hash
-- (the first kept row's prev_hash), under trim_mac, so deleting more rows from the start than
-- retention did still breaks the chain.
ALTER TABLE audit_heads ADD COLUMN trim_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_heads ADD COLUMN trim_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_heads ADD COLUMN trim_mac TEXT NOT NULL DEFAULT '';

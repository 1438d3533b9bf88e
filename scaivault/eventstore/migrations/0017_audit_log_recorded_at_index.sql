-- Audit retention asks, in every server once a minute, which entries are older than the retention period
-- (projections/maintenance/retention.py: recorded_at < cutoff, any chain). The (chain, recorded_at) index cannot
-- answer that without reading all of itself, and the generic plan the job's prepared statement settles on after
-- its first runs reads the whole table through the notification_id index instead: a few milliseconds on a small
-- store, about a second a minute on one of a million secrets, while the audit log's and the event index's runners
-- wait (the job holds their swap locks). Indexed by time alone, the question reads a few pages however large the
-- log is, and the entries past retention when there are some. Keys arrive in time order: cheap to maintain.
CREATE INDEX IF NOT EXISTS scaivault_audit_log_recorded_at_idx ON scaivault_audit_log (recorded_at);

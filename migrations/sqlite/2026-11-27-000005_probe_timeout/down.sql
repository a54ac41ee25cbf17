ALTER TABLE servers DROP COLUMN probe_timeout_ms;

-- How long a health probe may take; NULL = 10 s or the server's timeout if shorter.
ALTER TABLE servers ADD COLUMN probe_timeout_ms BIGINT;

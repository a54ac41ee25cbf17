-- Whether a call of a tool that is not read-only drops the server's cached results.
ALTER TABLE servers ADD COLUMN invalidate_on_write BOOLEAN NOT NULL DEFAULT 1;

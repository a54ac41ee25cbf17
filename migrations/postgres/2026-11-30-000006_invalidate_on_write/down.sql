ALTER TABLE servers DROP COLUMN invalidate_on_write;

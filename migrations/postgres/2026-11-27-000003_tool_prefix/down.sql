ALTER TABLE servers DROP COLUMN tool_prefix;

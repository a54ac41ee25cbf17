-- How a server's tools are named at /mcp: NULL = the server's name, '' = no prefix.
ALTER TABLE servers ADD COLUMN tool_prefix TEXT;

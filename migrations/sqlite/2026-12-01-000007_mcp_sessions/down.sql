DROP TABLE mcp_sessions;
DROP TABLE cluster_notes;

DROP TABLE cluster_notes;
DROP TABLE mcp_session_subscriptions;
DROP TABLE mcp_sessions;

DROP TABLE api_keys;
DROP TABLE tool_invocations;
DROP TABLE health_events;
DROP TABLE servers;

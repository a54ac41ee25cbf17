-- The registry of upstream MCP servers. JSON lives in TEXT so one schema serves both backends.
CREATE TABLE servers (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    transport TEXT NOT NULL,
    command TEXT,
    args TEXT NOT NULL DEFAULT '[]',
    env TEXT NOT NULL DEFAULT '{}',
    cwd TEXT,
    url TEXT,
    headers TEXT NOT NULL DEFAULT '{}',
    enabled BOOLEAN NOT NULL DEFAULT 1,
    probe_interval_ms BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    cache_policy TEXT NOT NULL,
    cache_ttl_ms BIGINT,
    source TEXT NOT NULL,
    revision BIGINT NOT NULL DEFAULT 1,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE health_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    server TEXT NOT NULL,
    instance TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX health_events_server_id ON health_events (server, id);

CREATE TABLE tool_invocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    caller TEXT,
    arguments_hash TEXT NOT NULL,
    cached BOOLEAN NOT NULL,
    outcome TEXT NOT NULL,
    status BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX tool_invocations_created ON tool_invocations (created_at);
CREATE INDEX tool_invocations_server_tool ON tool_invocations (server, tool);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    allow TEXT NOT NULL DEFAULT '[]',
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

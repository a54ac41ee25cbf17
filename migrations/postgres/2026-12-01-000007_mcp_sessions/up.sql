-- Handshake-era /mcp sessions, so that any instance on this database can serve one
-- (src/mcp/records.rs). JSON lives in TEXT, as elsewhere.
CREATE TABLE mcp_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    -- The name of the key that opened it; NULL when the gateway ran open.
    owner TEXT,
    -- The client's `initialize` params: protocol version, capabilities, client info.
    initialize_params TEXT NOT NULL,
    log_level TEXT,
    created_at TIMESTAMP NOT NULL,
    seen_at TIMESTAMP NOT NULL
);
CREATE INDEX mcp_sessions_seen ON mcp_sessions (seen_at);

-- The resources each session subscribed to: a row each, so that instances adding and
-- removing subscriptions of one session at once never overwrite each other.
CREATE TABLE mcp_session_subscriptions (
    session TEXT NOT NULL,
    server TEXT NOT NULL,
    uri TEXT NOT NULL,
    PRIMARY KEY (session, server, uri)
);

-- Announcements too long for a NOTIFY payload (under 8,000 bytes), announced by row id
-- instead (src/cluster.rs); each is swept a few minutes after it was written.
CREATE TABLE cluster_notes (
    id BIGSERIAL PRIMARY KEY,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

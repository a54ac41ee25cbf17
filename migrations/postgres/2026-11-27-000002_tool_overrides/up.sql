-- Per-tool settings of a server (cache policy and TTL), as JSON: {"tool": {"cache": "always", "cache_ttl_ms": 10000}}.
ALTER TABLE servers ADD COLUMN tool_overrides TEXT NOT NULL DEFAULT '{}';

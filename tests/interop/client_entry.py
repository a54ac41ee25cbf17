#!/usr/bin/env python3
"""Connects to an MCP server the way an MCP client would from its own config file, with
the official Python SDK (PyPI `mcp` 2.x), and lists its tools.

    client_entry.py FILE NAME

FILE is a client's config (`mcpServers` as Claude Code, Claude Desktop and Cursor write
it, or VS Code's `servers`); NAME is the entry. An entry with `url` is reached over
Streamable HTTP with its `headers`; one with `command` is started as a process with its
`args` and `env` (on top of this process's environment) and spoken to over stdio, as
Claude Desktop does. Prints {"tools": [names...]}; exit code 1 on error (on stderr).
"""
import json
import os
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def target(entry: dict):
    if "url" in entry:
        http = httpx2.AsyncClient(headers=entry.get("headers", {}), timeout=60)
        return streamable_http_client(entry["url"], http_client=http)
    return StdioServerParameters(
        command=entry["command"],
        args=entry.get("args", []),
        env={**os.environ, **entry.get("env", {})},
        cwd=entry.get("cwd"),
    )


async def run(entry: dict) -> None:
    async with Client(target(entry), read_timeout_seconds=60) as client:
        names, cursor = [], None
        for _ in range(1000):
            page = await client.list_tools(cursor=cursor)
            names.extend(t.name for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
    print(json.dumps({"tools": names}))


def main() -> int:
    path, name = sys.argv[1], sys.argv[2]
    with open(path) as f:
        config = json.load(f)
    servers = config.get("mcpServers") or config.get("servers") or {}
    try:
        anyio.run(run, servers[name])
    except Exception as e:  # anyio wraps failures in exception groups
        e = innermost(e)
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

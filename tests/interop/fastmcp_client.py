#!/usr/bin/env python3
"""Drives omni-bridge's /mcp with fastmcp's client (PyPI `fastmcp` 4.x).

    fastmcp_client.py URL TOOL ARGS_JSON

Lists every tool, calls TOOL with ARGS_JSON, and prints one JSON document:
{"tools": N, "call": {"textLength", "sha256", "isError"}}. Exit codes: 0 done, 1 error.
"""
import asyncio
import hashlib
import json
import sys

from fastmcp import Client


async def run(url: str, tool: str, args: dict) -> None:
    async with Client(url, timeout=30) as client:
        tools = await client.list_tools()
        result = await client.call_tool(tool, args, raise_on_error=False)
        text = result.content[0].text
        print(json.dumps({
            "tools": len(tools),
            "call": {
                "textLength": len(text),
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                "isError": bool(result.is_error),
            },
        }))


def main() -> int:
    url, tool, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        asyncio.run(run(url, tool, args))
    except Exception as e:  # the test prints stderr on failure
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

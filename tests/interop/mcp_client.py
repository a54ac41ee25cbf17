#!/usr/bin/env python3
"""Drives omni-bridge's /mcp with the official Python MCP SDK (PyPI `mcp` 2.x).

    mcp_client.py URL [TOOL [ARGS_JSON]] [--mode auto|legacy] [--text-length]
                  [--sampling-answer TEXT] [--elicitation-content JSON]

Lists every tool (following nextCursor), optionally calls TOOL with ARGS_JSON, and
prints one JSON document: {"protocolVersion", "serverInfo", "tools", "call"?}.
With --text-length, "call" is {"textLength": N, "sha256": H, "isError": B}: the length
and digest of the result's first text, for results too large to print. --sampling-answer makes the client
offer sampling and answer every request with TEXT; --elicitation-content makes it offer
elicitation and accept every request with that content.
`--mode auto`, the SDK's default, probes `server/discover` (2026-07-28) first and falls
back to `initialize`; `legacy` goes straight to `initialize`.
Exit codes: 0 done, 1 error (on stderr), 3 the call answered isError.
"""
import argparse
import hashlib
import json
import sys

import anyio
from mcp import Client, types


def dump(model):
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def callbacks(sampling_answer: str | None, elicitation_content: str | None) -> dict:
    out = {}
    if sampling_answer is not None:

        async def sample(context, params):
            return types.CreateMessageResult(
                role="assistant",
                content=types.TextContent(type="text", text=sampling_answer),
                model="mcp_client.py",
                stop_reason="endTurn",
            )

        out["sampling_callback"] = sample
    if elicitation_content is not None:

        async def elicit(context, params):
            return types.ElicitResult(action="accept", content=json.loads(elicitation_content))

        out["elicitation_callback"] = elicit
    return out


async def run(url: str, tool: str | None, args: dict, mode: str, text_length: bool,
              answers: dict) -> int:
    async with Client(url, mode=mode, read_timeout_seconds=30, **answers) as client:
        out = {
            "protocolVersion": client.protocol_version,
            "serverInfo": dump(client.server_info) if client.server_info else None,
            "tools": [],
        }
        cursor = None
        for _ in range(1000):
            page = await client.list_tools(cursor=cursor)
            out["tools"].extend(dump(t) for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        code = 0
        if tool:
            result = await client.call_tool(tool, args)
            out["call"] = dump(result)
            if text_length:
                text = result.content[0].text
                out["call"] = {
                    "textLength": len(text),
                    "sha256": hashlib.sha256(text.encode()).hexdigest(),
                    "isError": bool(result.is_error),
                }
            code = 3 if result.is_error else 0
    print(json.dumps(out))
    return code


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("tool", nargs="?")
    p.add_argument("args", nargs="?", default="{}")
    p.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    p.add_argument("--text-length", action="store_true")
    p.add_argument("--sampling-answer")
    p.add_argument("--elicitation-content")
    ns = p.parse_args()
    answers = callbacks(ns.sampling_answer, ns.elicitation_content)
    try:
        return anyio.run(run, ns.url, ns.tool, json.loads(ns.args), ns.mode, ns.text_length,
                         answers)
    except Exception as e:  # anyio wraps failures in exception groups
        e = innermost(e)
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

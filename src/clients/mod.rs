//! The config files of the MCP clients people already use (Claude Desktop, Claude Code,
//! Cursor, VS Code): reading the servers they list, so `omni-bridge import` can put them
//! behind the gateway, and writing the one entry that points a client at the gateway, for
//! `omni-bridge connect`.
//!
//! Two shapes exist. `mcpServers` (Claude Desktop, Claude Code's `.mcp.json`, Cursor's
//! `mcp.json`) and VS Code's `servers` (in `.vscode/mcp.json`, or under `mcp` in its
//! settings). Both are JSON with comments allowed (VS Code writes JSONC), so they are read
//! and edited with a JSONC parser that keeps what it does not touch.

pub mod connect;
pub mod files;
pub mod placeholders;
pub mod read;

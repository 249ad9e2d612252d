"""An MCP server (the real Python SDK's MCPServer) whose tools have side
effects: each appends a JSON line to $SIDE_EFFECTS with the wall-clock time
it ran."""

import json
import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("side-effects")
import sys

LOG = sys.argv[1] if len(sys.argv) > 1 else os.environ["SIDE_EFFECTS"]


def effect(tool: str, **args) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps({"tool": tool, "args": args, "at": time.time()}) + "\n")


@server.tool()
def write_note(text: str) -> str:
    """Writes a note."""
    effect("write_note", text=text)
    return f"noted: {text}"


@server.tool()
def run_sql(query: str) -> str:
    """Runs SQL."""
    effect("run_sql", query=query)
    return "ok"


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("this tool fails")


@server.resource("notes://readme")
def readme() -> str:
    """A resource."""
    return "read me"


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[2] == "http":
        server.run("streamable-http", port=int(sys.argv[3]))
    else:
        server.run()

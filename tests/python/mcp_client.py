"""Drives an MCP server through `ledger mcp` with the real Python SDK's
client over stdio, running the calls given as JSON on the command line, and
prints one JSON line per call: {"tool", "ok", "text" | "error"}.

    mcp_client.py '<ledger mcp command as a JSON list>' '[["write_note", {"text": "a"}], ...]'
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

command = json.loads(sys.argv[1])
calls = json.loads(sys.argv[2])
concurrent = len(sys.argv) > 3 and sys.argv[3] == "concurrent"


async def one(session, name, args):
    try:
        r = await session.call_tool(name, args)
        text = "".join(getattr(c, "text", "") for c in r.content)
        return {"tool": name, "ok": not r.is_error, "text": text}
    except Exception as e:  # A JSON-RPC error from the gateway.
        return {"tool": name, "ok": False, "error": str(e)}


def transport():
    if isinstance(command, str):  # A Streamable HTTP endpoint URL.
        from mcp.client.streamable_http import streamable_http_client

        return streamable_http_client(command)
    return stdio_client(StdioServerParameters(command=command[0], args=command[1:]))


async def main():
    async with transport() as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            print(json.dumps({"tools": sorted(t.name for t in tools.tools)}), flush=True)
            res = await session.read_resource("notes://readme")
            print(json.dumps({"resource": res.contents[0].text}), flush=True)
            if concurrent:
                results = await asyncio.gather(*(one(session, n, a) for n, a in calls))
            else:
                results = [await one(session, n, a) for n, a in calls]
            for r in results:
                print(json.dumps(r), flush=True)


asyncio.run(main())

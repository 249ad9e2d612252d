"""Added latency of `ledger mcp`: the same tool called N times by the real
MCP client, straight to the server and through the gateway (ledger on the
same machine); prints p50/p99 of each and the calls/s through the gateway.

    mcp_bench.py LEDGER_BIN GRPC_URL [N]
"""

import asyncio
import json
import statistics
import sys
import tempfile
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ledger, grpc = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
server = [sys.executable, __file__.replace("mcp_bench.py", "mcp_server.py"), tempfile.mktemp()]


async def run(command):
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            for _ in range(20):
                await s.call_tool("write_note", {"text": "warm"})
            lat = []
            start = time.perf_counter()
            for i in range(n):
                t = time.perf_counter()
                await s.call_tool("write_note", {"text": str(i)})
                lat.append((time.perf_counter() - t) * 1000)
            rate = n / (time.perf_counter() - start)
            # Concurrent: many calls in flight through one gateway.
            start = time.perf_counter()
            await asyncio.gather(*(s.call_tool("write_note", {"text": str(i)}) for i in range(n)))
            crate = n / (time.perf_counter() - start)
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], rate, crate


direct = asyncio.run(run(server))
proxied = asyncio.run(run([ledger, "--server", grpc, "mcp", "--agent", "bench", "--spool", tempfile.mktemp(), "--"] + server))
print(json.dumps({"direct": direct, "proxied": proxied}))
print(f"direct   p50 {direct[0]:.2f} ms  p99 {direct[1]:.2f} ms  {direct[2]:.0f} calls/s sequential, {direct[3]:.0f} calls/s concurrent")
print(f"gateway  p50 {proxied[0]:.2f} ms  p99 {proxied[1]:.2f} ms  {proxied[2]:.0f} calls/s sequential, {proxied[3]:.0f} calls/s concurrent")
print(f"added    p50 {proxied[0] - direct[0]:.2f} ms  p99 {proxied[1] - direct[1]:.2f} ms")

"""A raw stdio JSON-RPC peer for the pass-through test: records every line
it receives, byte for byte, in the file given, and answers each request
with a response whose bytes are fixed (odd spacing, key order, escapes), so
the test can check both directions are passed through unchanged."""

import json
import sys

log = open(sys.argv[1], "ab", buffering=0)
for raw in sys.stdin.buffer:
    log.write(raw)
    msg = json.loads(raw)
    if "id" in msg and "method" in msg:
        if msg["method"] == "tools/call":
            body = '{"result": {"content": [{"type": "text", "text": "done \\u00e9"}], "isError": false}, "jsonrpc": "2.0", "id": %s}' % json.dumps(msg["id"])
        else:
            body = '{ "jsonrpc":"2.0" ,"id": %s, "result": {"echo": %s, "z": 1, "a": [ 1,2 ]} }' % (
                json.dumps(msg["id"]), json.dumps(msg["method"]))
        sys.stdout.buffer.write(body.encode() + b"\n")
        sys.stdout.buffer.flush()

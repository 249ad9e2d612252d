"""Emits one agent run as OpenTelemetry GenAI spans with the real Python SDK
and exports it to ledgerd over OTLP, twice (the second export is a retry of
the same spans). Prints the trace id.

    otel_emit.py grpc http://127.0.0.1:7400 [TOKEN]
    otel_emit.py http http://127.0.0.1:4318/v1/traces [TOKEN]
"""

import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

transport, endpoint = sys.argv[1], sys.argv[2]
token = sys.argv[3] if len(sys.argv) > 3 else None
headers = {"authorization": f"Bearer {token}"} if token else None

if transport == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers)

memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "billing-service"}))
provider.add_span_processor(SimpleSpanProcessor(memory))
tracer = provider.get_tracer("agent-ledger-tests")

with tracer.start_as_current_span("invoke_agent billing-agent") as agent:
    agent.set_attribute("gen_ai.operation.name", "invoke_agent")
    agent.set_attribute("gen_ai.agent.name", "billing-agent")
    agent.set_attribute("gen_ai.conversation.id", "conv-42")
    with tracer.start_as_current_span("chat gpt-4o") as chat:
        chat.set_attribute("gen_ai.operation.name", "chat")
        chat.set_attribute("gen_ai.provider.name", "openai")
        chat.set_attribute("gen_ai.request.model", "gpt-4o")
        chat.set_attribute("gen_ai.usage.input_tokens", 120)
    with tracer.start_as_current_span("execute_tool sql.execute") as tool:
        tool.set_attribute("gen_ai.operation.name", "execute_tool")
        tool.set_attribute("gen_ai.tool.name", "sql.execute")
        tool.set_attribute("gen_ai.tool.call.id", "call_1")
        tool.set_attribute(
            "gen_ai.tool.call.arguments", json.dumps({"query": "DELETE FROM customers"})
        )
        tool.set_attribute("gen_ai.tool.call.result", json.dumps({"rows": 1200}))
    with tracer.start_as_current_span("execute_tool send_email") as tool:
        tool.set_attribute("gen_ai.operation.name", "execute_tool")
        tool.set_attribute("gen_ai.tool.name", "send_email")
        tool.set_attribute("error.type", "SMTPError")
        tool.set_status(Status(StatusCode.ERROR, "mail server down"))
    # Not a GenAI span: dropped by default.
    with tracer.start_as_current_span("http GET /health"):
        pass

spans = memory.get_finished_spans()
trace_id = format(spans[0].context.trace_id, "032x")
for attempt in range(2):
    result = exporter.export(spans)
    if result.name != "SUCCESS":
        print(f"export {attempt} failed: {result}", file=sys.stderr)
        sys.exit(1)
exporter.shutdown()
print(trace_id)

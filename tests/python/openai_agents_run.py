"""Runs a real OpenAI Agents SDK agent offline (a fake model that calls two
tools, then answers), instrumented with OpenInference's OpenTelemetry
instrumentation, exporting its spans to ledgerd over OTLP/gRPC. Prints the
trace id of the run.

    openai_agents_run.py http://127.0.0.1:7400
"""

import asyncio
import json
import sys

from agents import Agent, ModelResponse, Runner, Usage, function_tool, set_trace_processors
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

endpoint = sys.argv[1]

# No uploads to OpenAI: only the OpenTelemetry instrumentation sees the run.
set_trace_processors([])
provider = TracerProvider(resource=Resource.create({"service.name": "support-service"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)


class FakeModel(Model):
    """Calls lookup_customer, then refund, then answers."""

    def __init__(self) -> None:
        self.turn = 0

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema,
                           handoffs, tracing, *, previous_response_id=None, conversation_id=None,
                           prompt=None):
        self.turn += 1
        if self.turn == 1:
            out = [ResponseFunctionToolCall(id="fc_1", call_id="call_1", name="lookup_customer",
                                            arguments=json.dumps({"customer_id": "c-42"}),
                                            type="function_call", status="completed")]
        elif self.turn == 2:
            out = [ResponseFunctionToolCall(id="fc_2", call_id="call_2", name="refund",
                                            arguments=json.dumps({"customer_id": "c-42", "amount": 10}),
                                            type="function_call", status="completed")]
        else:
            out = [ResponseOutputMessage(id="msg_1", role="assistant", status="completed",
                                         type="message",
                                         content=[ResponseOutputText(text="Refunded 10.",
                                                                     type="output_text",
                                                                     annotations=[])])]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError


@function_tool
def lookup_customer(customer_id: str) -> str:
    """Looks a customer up."""
    return json.dumps({"id": customer_id, "plan": "pro"})


@function_tool
def refund(customer_id: str, amount: int) -> str:
    """Refunds a customer."""
    return f"refunded {amount} to {customer_id}"


agent = Agent(
    name="support-agent",
    instructions="Help the customer.",
    model=FakeModel(),
    tools=[lookup_customer, refund],
)
result = asyncio.run(Runner.run(agent, "Refund customer c-42 ten dollars."))
assert result.final_output == "Refunded 10.", result.final_output
provider.shutdown()

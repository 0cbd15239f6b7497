"""The OpenAI Agents SDK runs an agent against the bundled model through ``/v1/responses``
(its default model API), streamed and not."""

from __future__ import annotations

from openai import AsyncOpenAI

from tests.helpers import InferdProcess

MODEL = "smollm2-135m-instruct"


async def test_an_agent_runs_on_the_bundled_model(inferd_server: InferdProcess) -> None:
    # imported here: the SDK takes seconds of CPU to import, which every collection of the
    # suite (each xdist worker's) would spend otherwise
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # traces would be sent to OpenAI's servers
    client = AsyncOpenAI(base_url=inferd_server.url + "/v1", api_key="unused", max_retries=0)
    agent = Agent(name="Greeter", instructions="Answer in one short sentence.",
                  model=OpenAIResponsesModel(model=MODEL, openai_client=client),
                  model_settings=ModelSettings(max_tokens=400, temperature=0))
    result = await Runner.run(agent, "Say hello to Ada.")
    assert isinstance(result.final_output, str) and result.final_output
    assert result.raw_responses[0].response_id is not None
    # the response the agent made is stored on the server
    stored = await client.responses.retrieve(result.raw_responses[0].response_id)
    assert stored.output_text == result.final_output

    streamed = Runner.run_streamed(agent, "Say hello to Bob.")
    kinds = [event.type async for event in streamed.stream_events()]
    assert "raw_response_event" in kinds and streamed.final_output

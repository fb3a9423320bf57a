"""The official OpenAI Python SDK's Responses API and function calling against moltbot, unchanged.

The fake upstream speaks Chat Completions only: moltbot bridges. Its echo script acts like an obedient
model: with tools offered and a user message `call NAME {json}` it calls NAME; given a tool result it
answers `echo: tool result: …`.
"""

import json

import openai
import pytest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_create_retrieve_and_delete(moltbot):
    client = moltbot.client()
    resp = client.responses.create(model="default", input="hello responses", instructions="Be brief.")
    assert resp.object == "response"
    assert resp.status == "completed"
    assert resp.output_text == "echo: hello responses"
    assert resp.instructions == "Be brief."
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens > 0

    again = client.responses.retrieve(resp.id)
    assert again.id == resp.id and again.output_text == resp.output_text

    items = client.responses.input_items.list(resp.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].role == "user"
    assert items.data[0].content[0].text == "hello responses"

    client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)


def test_streaming_create(moltbot):
    client = moltbot.client()
    stream = client.responses.create(model="default", input="stream it", stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream it"
    assert events[-1].response.output_text == "echo: stream it"
    # Stored before the completion event: retrievable at once.
    assert client.responses.retrieve(events[-1].response.id).status == "completed"


def test_stream_helper(moltbot):
    client = moltbot.client()
    with client.responses.stream(model="default", input="helper stream") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "echo: helper stream"
    assert final.output_text == "echo: helper stream"
    assert final.status == "completed"


def test_previous_response_id_chain(moltbot):
    client = moltbot.client()
    first = client.responses.create(model="default", input="My name is Ada.")
    second = client.responses.create(model="default", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.output_text == "echo: What is my name?"
    # The context grew: the upstream counted 3 messages (the echo script reports prompt_tokens = the
    # number of messages it received).
    assert second.usage.input_tokens == 3
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="default", input="x", previous_response_id="resp_does_not_exist")
    assert e.value.body["param"] == "previous_response_id"


def test_conversation(moltbot):
    client = moltbot.client()
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "The code is 4711."}])
    resp = client.responses.create(model="default", input="What is the code?", conversation=conv.id)
    assert resp.conversation.id == conv.id
    assert resp.usage.input_tokens == 2
    items = client.conversations.items.list(conv.id, order="asc")
    texts = [i.content[0].text for i in items.data]
    assert texts == ["The code is 4711.", "What is the code?", "echo: What is the code?"]
    # Streaming into the same conversation.
    with client.responses.stream(model="default", input="and now?", conversation=conv.id) as stream:
        final = stream.get_final_response()
    assert final.output_text == "echo: and now?"
    assert final.usage.input_tokens == 4
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="default", input="x", conversation=conv.id, previous_response_id=resp.id)
    assert e.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="default", input="x", conversation="conv_missing")


def test_function_calling_round_trip(moltbot):
    client = moltbot.client()
    first = client.responses.create(
        model="default",
        input='call get_weather {"city":"Paris"}',
        tools=[WEATHER],
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    second = client.responses.create(
        model="default",
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C, sunny"}],
    )
    assert second.output_text == "echo: tool result: 18C, sunny"


def test_function_calling_streamed(moltbot):
    client = moltbot.client()
    with client.responses.stream(
        model="default", input='call get_weather {"city":"Rome"}', tools=[WEATHER]
    ) as stream:
        arg_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert json.loads("".join(arg_deltas)) == {"city": "Rome"}
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Rome"}


def test_function_calling_chat_completions(moltbot):
    client = moltbot.client()
    tools = [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    messages = [{"role": "user", "content": 'call get_weather {"city":"Oslo"}'}]
    first = client.chat.completions.create(model="default", messages=messages, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    # Streaming: the SDK's helper assembles the tool-call deltas.
    with client.chat.completions.stream(model="default", messages=messages, tools=tools) as stream:
        final = stream.get_final_completion()
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "-3C"},
    ]
    second = client.chat.completions.create(model="default", messages=messages, tools=tools)
    assert second.choices[0].message.content == "echo: tool result: -3C"


def test_bad_input(moltbot):
    client = moltbot.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="default", input=[{"type": "mystery_item", "id": "x"}])
    assert e.value.body["param"] == "input[0].type"
    assert "mystery_item" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="default", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"

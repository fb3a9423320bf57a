"""The official OpenAI Python SDK against moltbot, unchanged."""

import openai
import pytest


def test_chat_completion(moltbot):
    client = moltbot.client()
    resp = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hello there"}]
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "echo: hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0


def test_streaming_with_usage(moltbot):
    client = moltbot.client()
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me"
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_stream_helper(moltbot):
    client = moltbot.client()
    with client.chat.completions.stream(
        model="default", messages=[{"role": "user", "content": "helper"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: helper"


def test_models(moltbot):
    client = moltbot.client()
    assert [m.id for m in client.models.list()] == ["default"]


def test_errors_are_sdk_exceptions(moltbot):
    client = moltbot.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="default", n=2, messages=[{"role": "user", "content": "x"}])
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="default", messages=[])
    assert e.value.param == "messages"


def test_conversations_and_restart(moltbot):
    client = moltbot.client()
    conv = client.conversations.create(
        metadata={"topic": "sdk"},
        items=[{"type": "message", "role": "system", "content": "You are terse."}],
    )
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "sdk"}
    assert client.conversations.retrieve(conv.id).id == conv.id
    assert client.conversations.update(conv.id, metadata={"topic": "sdk2"}).metadata == {"topic": "sdk2"}

    first = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "remember the word apple"}],
        extra_body={"conversation": conv.id},
    )
    assert first.choices[0].message.content == "echo: remember the word apple"

    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "a note"}]
    )
    assert len(added.data) == 1
    items = list(client.conversations.items.list(conv.id, order="asc"))
    texts = [i.content[0].text for i in items]
    assert texts == ["You are terse.", "remember the word apple", "echo: remember the word apple", "a note"]
    assert client.conversations.items.retrieve(items[-1].id, conversation_id=conv.id).id == items[-1].id
    client.conversations.items.delete(items[-1].id, conversation_id=conv.id)

    # The stored conversation survives a restart and is continued from the store.
    assert moltbot.stop() == 0
    moltbot.start()
    client = moltbot.client()
    again = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "what was the word?"}],
        extra_headers={"X-Moltbot-Conversation": conv.id},
    )
    assert again.choices[0].message.content == "echo: what was the word?"
    items = list(client.conversations.items.list(conv.id, order="asc"))
    assert [i.role for i in items] == ["system", "user", "assistant", "user", "assistant"]

    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)

"""`client.embeddings.create` of the official OpenAI Python SDK against moltbot: the remote model over the
fake upstream, and local GGUF models generated for the test (no download): a tiny embedding model (mean
pooling in its metadata) and a tiny generative model (no pooling, so no embeddings)."""

import base64
import json
import math
import os
import struct
import subprocess
from pathlib import Path

import openai
import pytest

from conftest import ADMIN_KEY, JWT_SECRET, ROOT, UPSTREAM_KEY, Moltbot

SYNTHETIC_GGUF = str(
    Path(os.environ.get("MOLTBOT_SYNTHETIC_GGUF_BIN", ROOT / "target" / "debug" / "examples" / "synthetic_gguf")).resolve()
)
LOCAL_CONTEXT = 64


@pytest.fixture
def moltbot(tmp_path, fake_upstream):
    """moltbot with the remote `default` model and two local ones from `moltbot.toml` in its directory."""
    embed = tmp_path / "tiny-embed.gguf"
    chat = tmp_path / "tiny-chat.gguf"
    subprocess.run([SYNTHETIC_GGUF, str(embed), "--pooling", "mean"], check=True)
    subprocess.run([SYNTHETIC_GGUF, str(chat)], check=True)
    models = ""
    for name, path in [("tiny-embed", embed), ("tiny-chat", chat)]:
        models += (
            f'[[models]]\nname = "{name}"\nbackend = "local"\nmodel_path = "{path}"\n'
            f"context_window = {LOCAL_CONTEXT}\nmax_tokens = 16\nthreads = 1\nparallel = 1\n\n"
        )
    (tmp_path / "moltbot.toml").write_text(models)
    m = Moltbot(tmp_path, fake_upstream).start()
    yield m
    if m.proc.poll() is None:
        m.stop()
    log = m.log.read_text()
    assert UPSTREAM_KEY not in log and ADMIN_KEY not in log and JWT_SECRET not in log


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def f32(values):
    """Floats as the f32s they were serialised from (JSON prints the shortest decimal of each f32)."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def from_base64(text):
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_float_embeddings_from_the_remote_model(moltbot):
    client = moltbot.client()
    resp = client.embeddings.create(model="default", input=["hello world", "bye"], encoding_format="float")
    assert resp.object == "list" and resp.model == "default"
    assert [d.index for d in resp.data] == [0, 1]
    assert all(d.object == "embedding" for d in resp.data)
    a, b = resp.data[0].embedding, resp.data[1].embedding
    assert len(a) == len(b) == 16
    assert abs(norm(a) - 1) < 1e-5 and a != b
    # The fake upstream counts one token per word.
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == 3
    again = client.embeddings.create(model="default", input="hello world", encoding_format="float")
    assert again.data[0].embedding == a


def test_base64_raw_and_decoded_by_the_sdk(moltbot):
    client = moltbot.client()
    floats = client.embeddings.create(model="default", input="same text", encoding_format="float").data[0].embedding

    # Without encoding_format the SDK asks for base64 and decodes it itself.
    raw = client.embeddings.with_raw_response.create(model="default", input="same text")
    sent = json.loads(raw.http_request.content)
    assert sent["encoding_format"] == "base64"
    body = raw.http_response.json()
    assert isinstance(body["data"][0]["embedding"], str)
    assert from_base64(body["data"][0]["embedding"]) == f32(floats)
    decoded = raw.parse().data[0].embedding
    assert isinstance(decoded, list) and f32(decoded) == f32(floats)

    # Asked for explicitly, base64 reaches the caller as the string.
    explicit = client.embeddings.create(model="default", input="same text", encoding_format="base64")
    text = explicit.data[0].embedding
    assert isinstance(text, str) and from_base64(text) == f32(floats)

    # dimensions goes to the upstream.
    short = client.embeddings.create(model="default", input="same text", dimensions=4, encoding_format="float")
    assert len(short.data[0].embedding) == 4


def test_local_embedding_model(moltbot):
    client = moltbot.client()
    resp = client.embeddings.create(model="tiny-embed", input=["alpha", "beta", "alpha"], encoding_format="float")
    v = [d.embedding for d in resp.data]
    assert all(len(x) == 256 for x in v)
    assert all(abs(norm(x) - 1) < 1e-4 for x in v)
    assert max(abs(x - y) for x, y in zip(v[0], v[2])) < 1e-5
    assert max(abs(x - y) for x, y in zip(v[0], v[1])) > 1e-3
    assert resp.usage.prompt_tokens > 0
    decoded = client.embeddings.create(model="tiny-embed", input="alpha").data[0].embedding
    assert max(abs(x - y) for x, y in zip(decoded, v[0])) < 1e-5


def test_bad_requests(moltbot):
    client = moltbot.client()
    cases = [
        (dict(model="default", input=[]), "input"),
        (dict(model="default", input=""), "input"),
        (dict(model="default", input=["ok", ""]), "input"),
        (dict(model="default", input=["x"] * 2049), "input"),
        (dict(model="default", input="x", encoding_format="hex"), "encoding_format"),
        (dict(model="tiny-embed", input="x", dimensions=8), "dimensions"),
        (dict(model="tiny-chat", input="x"), "model"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(**kwargs)
        assert e.value.param == param, (kwargs.get("input", "")[:3], e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="tiny-embed", input=["fine", "word " * 100])
    assert e.value.param == "input" and e.value.code == "context_length_exceeded"
    assert f"maximum context length is {LOCAL_CONTEXT} tokens" in e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="nope", input="x")
    assert e.value.code == "model_not_found"

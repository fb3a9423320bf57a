"""Schemathesis hooks for `make fuzz-api` (loaded through SCHEMATHESIS_HOOKS).

Generated bodies name random models and, for chat, messages whose role and content moltbot refuses (the schema
documents `content` as an object and `role` as any string), so nearly every case would stop at a 404 or 400. Two
bodies in three are steered instead: the configured model's name, and for chat each message given a valid role
and a string (or parts) content, for responses and embeddings a string `input` where an object was generated,
every other field left as generated. The fuzzer then also reaches the chat
pipeline, the upstream call and the store. The choice is a function of the body (crc32): a run is reproducible."""

import json
import zlib

import schemathesis

MODEL = "fuzz-model"
ROLES = ["user", "system", "assistant", "user", "developer"]


def _steer(body: dict) -> dict:
    body = {**body, "model": MODEL}
    messages = body.get("messages")
    if isinstance(messages, list):
        fixed = []
        for i, m in enumerate(messages):
            m = dict(m) if isinstance(m, dict) else {}
            m["role"] = ROLES[i % len(ROLES)] if i < len(messages) - 1 else "user"
            if not isinstance(m.get("content"), (str, list)):
                m["content"] = json.dumps(m.get("content"))
            fixed.append(m)
        body["messages"] = fixed or [{"role": "user", "content": "hi"}]
    # Responses and embeddings: `input` is documented as an object but taken as a string or a list.
    if "input" in body and not isinstance(body["input"], (str, list)):
        body["input"] = json.dumps(body["input"])
    if isinstance(body.get("conversation"), dict):
        body.pop("conversation")
    return body


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and "model" in body:
        digest = zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode())
        if digest % 3:
            body = _steer(body)
    return body

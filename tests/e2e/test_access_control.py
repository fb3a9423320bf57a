"""Access control through the official OpenAI SDK: a key, a JWT from /v1/auth/token, and the errors
SDKs rely on (401, 403, 429 with x-should-retry)."""

import json
import urllib.request

import openai
import pytest

from conftest import ADMIN_KEY


def post(url: str, key: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def admin(moltbot, body: dict) -> dict:
    return post(f"http://{moltbot.addrs['admin_addr']}/admin/api/keys", ADMIN_KEY, body)


def test_sdk_with_a_jwt_from_the_token_endpoint(moltbot):
    token = post(f"{moltbot.base_url}/auth/token", ADMIN_KEY)
    assert token["token_type"] == "Bearer" and token["expires_in"] == 24 * 3600
    client = moltbot.client(api_key=token["access_token"])
    resp = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "token please"}]
    )
    assert resp.choices[0].message.content == "echo: token please"
    assert [m.id for m in client.models.list()] == ["default"]


def test_bad_credentials_are_sdk_authentication_errors(moltbot):
    for key in ["mb_" + "x" * 40, "sk-not-ours", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."]:
        with pytest.raises(openai.AuthenticationError) as e:
            moltbot.client(api_key=key).models.list()
        assert e.value.status_code == 401


def test_missing_scope_is_permission_denied(moltbot):
    key = admin(moltbot, {"name": "conv-only", "scopes": ["conversations"]})["secret"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        moltbot.client(api_key=key).chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.code == "insufficient_scope"


def test_rate_limit_is_a_sdk_rate_limit_error_with_openai_headers(moltbot):
    key = admin(moltbot, {"name": "slow", "scopes": ["chat"], "requests_per_minute": 1})["secret"]
    client = moltbot.client(api_key=key)
    raw = client.models.with_raw_response.list()
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    assert raw.headers["x-ratelimit-reset-requests"] == "1m0s"
    with pytest.raises(openai.RateLimitError) as e:
        client.models.list()
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) > 0


def test_exhausted_daily_quota_is_not_retried(moltbot):
    key = admin(moltbot, {"name": "tiny", "scopes": ["chat"], "daily_tokens": 1})["secret"]
    client = openai.OpenAI(base_url=moltbot.base_url, api_key=key, max_retries=3)
    client.chat.completions.create(model="default", messages=[{"role": "user", "content": "spend"}])
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "more"}])
    assert e.value.code == "insufficient_quota"
    assert e.value.response.headers["x-should-retry"] == "false"

"""FakeGroq's "llamacpp" and "openai" profiles, pinned with plain httpx (no bot code).

Each test states one behaviour the profile copies from the real server; where it comes
from is written in ``tests/fakes/profile_llamacpp.py`` and ``profile_openai.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fakes.groq_server import FILLER, FakeGroq, FakeModel
from tests.fakes.profile_llamacpp import DEFAULT_MODEL_PATH
from tests.fakes.profile_llamacpp import prompt_tokens as llama_prompt_tokens
from tests.fakes.profile_openai import prompt_tokens as openai_prompt_tokens

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def llama(fake_llamacpp: FakeGroq) -> FakeGroq:
    return fake_llamacpp


@pytest.fixture
def openai(fake_openai: FakeGroq) -> FakeGroq:
    fake_openai.clock = lambda: 1_000.0  # frozen, so the rate-limit headers are exact
    return fake_openai


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


def auth(fake: FakeGroq) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake.api_key}"} if fake.api_key else {}


async def sse(
    http: httpx.AsyncClient, fake: FakeGroq, body: dict[str, Any]
) -> tuple[httpx.Response, list[Any]]:
    """POST a streamed chat request; the response and its ``data:`` payloads in order."""
    events: list[Any] = []
    url = f"{fake.base_url}/chat/completions"
    async with http.stream("POST", url, json={**body, "stream": True}, headers=auth(fake)) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return r, events


async def chat(http: httpx.AsyncClient, fake: FakeGroq, body: dict[str, Any]) -> httpx.Response:
    return await http.post(f"{fake.base_url}/chat/completions", json=body, headers=auth(fake))


def content_of(events: list[Any]) -> str:
    chunks = [e for e in events if isinstance(e, dict) and e["choices"]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


def finish_of(events: list[Any]) -> str | None:
    reasons = [c["choices"][0]["finish_reason"] for c in events if isinstance(c, dict)]
    return [r for r in reasons if r][-1] if any(reasons) else None


def ratelimit_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit")}


# ----- llamacpp -----


async def test_llamacpp_base_url_and_models(llama: FakeGroq, http: httpx.AsyncClient) -> None:
    assert llama.base_url.endswith("/v1") and "/openai/" not in llama.base_url
    r = await http.get(f"{llama.base_url}/models")  # no key configured: none needed
    assert r.status_code == 200
    assert r.json() == {
        "object": "list",
        "data": [
            {"id": DEFAULT_MODEL_PATH, "object": "model", "owned_by": "me", "permissions": []}
        ],
    }
    assert ratelimit_headers(r) == {}


async def test_llamacpp_props(llama: FakeGroq, http: httpx.AsyncClient) -> None:
    llama.n_ctx = 4_096
    llama.api_key = "secret"  # /props is public on llama.cpp: no key check
    root = llama.base_url.removesuffix("/v1")
    props = (await http.get(f"{root}/props")).json()
    assert props["default_generation_settings"]["n_ctx"] == 4_096
    assert "n_ctx" not in props  # llama.cpp has no top-level n_ctx
    assert props["model_path"] == DEFAULT_MODEL_PATH
    assert props["total_slots"] == 1

    llama.props_enabled = False  # llama-cpp-python has no /props
    r = await http.get(f"{root}/props")
    assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})


async def test_llamacpp_api_key_only_when_set(llama: FakeGroq, http: httpx.AsyncClient) -> None:
    assert (await chat(http, llama, {"messages": HI})).status_code == 200
    llama.api_key = "secret"
    r = await http.post(f"{llama.base_url}/chat/completions", json={"messages": HI})
    assert (r.status_code, r.json()) == (401, {"detail": "Invalid API key"})
    llama.llamacpp_errors = "llama.cpp"
    r = await http.get(f"{llama.base_url}/models", headers={"Authorization": "Bearer nope"})
    error = {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}
    assert (r.status_code, r.json()) == (401, {"error": error})
    assert (await chat(http, llama, {"messages": HI})).status_code == 200


async def test_llamacpp_answer_usage_and_record(llama: FakeGroq, http: httpx.AsyncClient) -> None:
    system = {"role": "system", "content": "Be brief."}
    body: dict[str, Any] = {"model": "whatever", "messages": [system, *HI]}
    r = await chat(http, llama, body)
    assert ratelimit_headers(r) == {}
    answer = r.json()
    assert answer["choices"][0]["message"]["content"] == "turns=1 last=hi model=whatever"
    assert answer["choices"][0]["finish_reason"] == "stop"
    prompt = llama_prompt_tokens(body["messages"])
    assert answer["usage"]["prompt_tokens"] == prompt == (3 + 6) + (1 + 6)
    assert llama.chat_requests[-1]["body"] == body
    assert llama.chat_requests[-1]["prompt_tokens"] == prompt


def test_llamacpp_counts_more_than_chars_over_4() -> None:
    text = "def f(x): return x**2  # 35 chars!!"
    assert llama_prompt_tokens([{"role": "user", "content": text}]) == 10 + 6
    assert len(text) / 4 < 10


async def test_llamacpp_stream_has_no_usage(llama: FakeGroq, http: httpx.AsyncClient) -> None:
    body = {"messages": HI, "stream_options": {"include_usage": True}}
    r, events = await sse(http, llama, body)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert ratelimit_headers(r) == {}
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)  # no usage-only chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert content_of(events) == f"turns=1 last=hi model={DEFAULT_MODEL_PATH}"
    assert finish_of(events) == "stop"


async def test_llamacpp_max_tokens_cuts_max_completion_tokens_ignored(
    llama: FakeGroq, http: httpx.AsyncClient
) -> None:
    llama.reply_words = 40
    ignored = (await chat(http, llama, {"messages": HI, "max_completion_tokens": 3})).json()
    assert ignored["choices"][0]["finish_reason"] == "stop"
    assert ignored["choices"][0]["message"]["content"].endswith(" ".join(FILLER * 4))

    cut = (await chat(http, llama, {"messages": HI, "max_tokens": 5})).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 5

    _, events = await sse(http, llama, {"messages": HI, "max_tokens": 5})
    pieces = [e for e in events[1:-1] if e["choices"][0]["delta"].get("content")]
    assert len(pieces) == 5
    assert finish_of(events) == "length"
    assert content_of(events) == cut["choices"][0]["message"]["content"]


async def test_llamacpp_prompt_plus_max_tokens_over_n_ctx_is_cut_not_refused(
    llama: FakeGroq, http: httpx.AsyncClient
) -> None:
    llama.n_ctx = 30
    llama.reply_words = 40
    prompt = llama_prompt_tokens(HI)  # 7: 23 tokens of room
    answer = (await chat(http, llama, {"messages": HI, "max_tokens": 1_000})).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 30 - prompt

    llama.overflow_counts_max_tokens = True  # the stricter server some tests want
    r = await chat(http, llama, {"messages": HI, "max_tokens": 1_000})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


async def test_llamacpp_streamed_overflow_is_an_empty_200_then_a_drop(
    llama: FakeGroq, http: httpx.AsyncClient
) -> None:
    llama.n_ctx = 64
    long = [{"role": "user", "content": "word " * 300}]
    received = b""
    url = f"{llama.base_url}/chat/completions"
    async with http.stream("POST", url, json={"messages": long, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        with pytest.raises(httpx.TransportError):
            async for raw in r.aiter_raw():
                received += raw
    assert received == b""
    assert llama.chat_requests[-1]["body"]["messages"] == long


async def test_llamacpp_overflow_bodies(llama: FakeGroq, http: httpx.AsyncClient) -> None:
    llama.n_ctx = 64
    long = [{"role": "user", "content": "word " * 300}]
    prompt = llama_prompt_tokens(long)
    r = await chat(http, llama, {"messages": long, "max_tokens": 16})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": f"This model's maximum context length is 64 tokens. However, you "
            f"requested {prompt + 16} tokens ({prompt} in the messages, 16 in the "
            "completion). Please reduce the length of the messages or completion.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    no_cap = (await chat(http, llama, {"messages": long})).json()["error"]["message"]
    assert f"you requested {prompt} tokens ({prompt} in the messages, None in" in no_cap

    llama.llamacpp_errors = "llama.cpp"
    llama.stream_overflow = "error"  # newer servers refuse before streaming
    url = f"{llama.base_url}/chat/completions"
    r = await http.post(url, json={"messages": long, "stream": True})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "code": 400,
            "message": f"request ({prompt} tokens) exceeds the available context size "
            "(64 tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": prompt,
            "n_ctx": 64,
        }
    }


async def test_llamacpp_stream_faults_apply(llama: FakeGroq, http: httpx.AsyncClient) -> None:
    llama.reply_words = 20
    llama.script("drop", after_tokens=2)
    url = f"{llama.base_url}/chat/completions"
    events = []
    with pytest.raises(httpx.TransportError):
        async with http.stream("POST", url, json={"messages": HI, "stream": True}) as r:
            async for line in r.aiter_lines():
                events.append(line)
    assert sum(line.startswith("data: ") for line in events) == 3  # role + 2 tokens
    with pytest.raises(ValueError, match="Groq-shaped"):
        llama.script("429")


# ----- openai -----


async def test_openai_models_and_key(openai: FakeGroq, http: httpx.AsyncClient) -> None:
    assert openai.base_url.endswith("/v1") and "/openai/" not in openai.base_url
    r = await http.get(f"{openai.base_url}/models", headers=auth(openai))
    assert {frozenset(m) for m in r.json()["data"]} == {
        frozenset({"id", "object", "created", "owned_by"})
    }
    assert r.json()["data"][0]["id"] == "gpt-4o-mini"

    missing = await http.get(f"{openai.base_url}/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key.")
    wrong = await http.post(
        f"{openai.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers={"Authorization": "Bearer sk-proj-abcdefghijklmnopWXYZ"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == {
        "message": f"Incorrect API key provided: sk-proj-{'*' * 16}WXYZ. You can find "
        "your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


async def test_openai_rate_limit_headers_per_minute(
    openai: FakeGroq, http: httpx.AsyncClient
) -> None:
    openai.limit_rpm, openai.limit_tpm = 60, 150_000  # the docs' sample values
    body = {"model": "gpt-4o-mini", "messages": HI, "max_completion_tokens": 13}
    first = await chat(http, openai, body)
    cost = openai_prompt_tokens(HI) + 13
    assert ratelimit_headers(first) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",  # one of 60 per minute comes back in 1 s
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": str(150_000 - cost),
        "x-ratelimit-reset-tokens": f"{round(cost * 60 / 150_000 * 1000)}ms",
    }
    r, _ = await sse(http, openai, body)
    assert r.headers["x-ratelimit-remaining-requests"] == "58"
    assert r.headers["x-ratelimit-reset-requests"] == "2s"


async def test_openai_stream_usage_only_when_asked(
    openai: FakeGroq, http: httpx.AsyncClient
) -> None:
    _, plain = await sse(http, openai, {"model": "gpt-4o-mini", "messages": HI})
    assert plain[-1] == "[DONE]"
    assert all("usage" not in c and c["choices"] for c in plain[:-1])
    assert content_of(plain) == "turns=1 last=hi model=gpt-4o-mini"

    asked = {"model": "gpt-4o-mini", "messages": HI, "stream_options": {"include_usage": True}}
    _, events = await sse(http, openai, asked)
    *chunks, usage_chunk, done = events
    assert done == "[DONE]"
    assert all(c["usage"] is None and c["choices"] for c in chunks)
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["prompt_tokens"] == openai_prompt_tokens(HI)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert finish_of(chunks) == "stop"


async def test_openai_completion_caps(openai: FakeGroq, http: httpx.AsyncClient) -> None:
    openai.reply_words = 40
    for cap in ("max_completion_tokens", "max_tokens"):
        body = {"model": "gpt-4o-mini", "messages": HI, cap: 4}
        answer = (await chat(http, openai, body)).json()
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == 4
    _, events = await sse(http, openai, {"model": "gpt-4o-mini", "messages": HI})
    assert finish_of(events) == "stop"


async def test_openai_rejects_unknown_arguments(openai: FakeGroq, http: httpx.AsyncClient) -> None:
    body = {"model": "gpt-4o-mini", "messages": HI, "reasoning_format": "parsed"}
    r = await chat(http, openai, body)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "Unrecognized request argument supplied: reasoning_format",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    r = await chat(http, openai, {**body, "include_reasoning": False})
    assert r.json()["error"]["message"] == (
        "Unrecognized request arguments supplied: include_reasoning, reasoning_format"
    )
    known = {"model": "gpt-4o-mini", "messages": HI, "user": "u1", "stream_options": None}
    assert (await chat(http, openai, known)).status_code == 200


async def test_openai_model_errors(openai: FakeGroq, http: httpx.AsyncClient) -> None:
    r = await chat(http, openai, {"model": "gpt-9", "messages": HI})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["message"] == (
        "The model `gpt-9` does not exist or you do not have access to it."
    )
    r = await chat(http, openai, {"messages": HI})
    assert (r.status_code, r.json()["error"]["message"]) == (
        400,
        "you must provide a model parameter",
    )


async def test_openai_context_overflow(openai: FakeGroq, http: httpx.AsyncClient) -> None:
    openai.models = [FakeModel("gpt-4o-mini", "system", 100, 16_384)]
    long = [{"role": "user", "content": "word " * 100}]
    prompt = openai_prompt_tokens(long)
    r = await chat(http, openai, {"model": "gpt-4o-mini", "messages": long})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "This model's maximum context length is 100 tokens. However, your "
            f"messages resulted in {prompt} tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    body = {"model": "gpt-4o-mini", "messages": HI, "max_completion_tokens": 95}
    r = await chat(http, openai, body)
    small = openai_prompt_tokens(HI)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        f"This model's maximum context length is 100 tokens. However, you requested "
        f"{small + 95} tokens ({small} in the messages, 95 in the completion). Please "
        "reduce the length of the messages or completion."
    )


async def test_groq_profile_is_the_default(http: httpx.AsyncClient) -> None:
    fake = FakeGroq()
    await fake.start()
    try:
        assert fake.profile == "groq"
        assert fake.base_url.endswith("/openai/v1")
        r = await chat(http, fake, {"model": "llama-3.1-8b-instant", "messages": HI})
        assert "x-ratelimit-limit-requests" in r.headers
    finally:
        await fake.aclose()

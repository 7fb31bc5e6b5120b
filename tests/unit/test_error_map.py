"""API error responses and httpx exceptions → bot.errors classes, with safe user texts."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.errors import (
    AuthenticationFailed,
    BadRequest,
    ContextTooLong,
    ModelUnavailable,
    RequestTooLarge,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamUnreachable,
)
from bot.llm.errors import (
    base_url_host,
    error_from_response,
    exceeded_from_message,
    map_transport_errors,
    rate_limit_from_body,
    retry_after_from_message,
)

KEY = "gsk_live_5b7f0e9c2d4a4c1e8f3b6a0d9e2c7f11"


def body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> bytes:
    error: dict[str, object] = {"message": message, "type": kind}
    if code is not None:
        error["code"] = code
    return json.dumps({"error": error}).encode()


CASES: list[tuple[int, bytes, type[UpstreamError], str]] = [
    (401, body("Invalid API Key", code="invalid_api_key"), AuthenticationFailed, "API key"),
    (429, body("Rate limit reached.", "tokens", "rate_limit_exceeded"), UpstreamRateLimited, ""),
    (413, body("Request too large", "tokens", "rate_limit_exceeded"), RequestTooLarge, "shorten"),
    (400, body("too big", code="request_too_large"), RequestTooLarge, "tokens-per-minute"),
    (
        400,
        body("Please reduce the length of the messages.", code="context_length_exceeded"),
        ContextTooLong,
        "/reset",
    ),
    (
        404,
        body("The model `llama-9000` does not exist.", code="model_not_found"),
        ModelUnavailable,
        "`llama-9000`",
    ),
    (
        400,
        body("The model `gemma2-9b-it` has been decommissioned.", code="model_decommissioned"),
        ModelUnavailable,
        "`gemma2-9b-it` has been retired",
    ),
    (400, body("'messages.1' : property 'reasoning' is unsupported"), BadRequest, "'reasoning'"),
    (422, body("temperature must be <= 2"), BadRequest, "temperature must be <= 2"),
    (400, b'{"error": "plain string error"}', BadRequest, "plain string error"),
    (500, body("Internal Server Error", "internal_server_error"), UpstreamServerError, "trouble"),
    (502, b"<html>Bad Gateway</html>", UpstreamServerError, "trouble"),
    (503, b"", UpstreamServerError, "trouble"),
    (498, body("Flex tier capacity exceeded"), UpstreamServerError, "trouble"),
]


@pytest.mark.parametrize(("status", "content", "cls", "text"), CASES)
def test_status_and_code_map_to_class_and_text(
    status: int, content: bytes, cls: type[UpstreamError], text: str
) -> None:
    error = error_from_response(status, {}, content)
    assert type(error) is cls
    assert error.status == status
    assert text in error.user_text
    # One actionable sentence: no line breaks, no tracebacks, ends like a sentence.
    assert "\n" not in error.user_text and "Traceback" not in error.user_text
    assert error.user_text.rstrip().endswith((".", ")"))


def test_retryable_flags() -> None:
    retryable = {
        type(error_from_response(s, {}, c))
        for s, c, _, _ in CASES
        if error_from_response(s, {}, c).retryable
    }
    assert retryable == {UpstreamRateLimited, UpstreamServerError}
    assert UpstreamUnreachable.retryable


def test_model_unavailable_names_the_requested_model() -> None:
    error = error_from_response(404, {}, body("Not Found"), model="qwen/qwen9")
    assert isinstance(error, ModelUnavailable)
    assert "`qwen/qwen9`" in error.user_text and "/model" in error.user_text
    anonymous = error_from_response(404, {}, b"")
    assert isinstance(anonymous, ModelUnavailable) and "/model" in anonymous.user_text


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Rate limit reached. Please try again in 2.0325s. Need more tokens?", 2.0325),
        ("Please try again in 1m2.5s.", 62.5),
        ("Please try again in 585ms", 0.585),
        ("please TRY AGAIN IN 1h2m3s", 3723.0),
        ("Please slow down.", None),
    ],
)
def test_retry_after_from_message_text(message: str, seconds: float | None) -> None:
    assert retry_after_from_message(message) == (pytest.approx(seconds) if seconds else None)
    error = error_from_response(429, {}, body(message, "tokens", "rate_limit_exceeded"))
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after_s == (pytest.approx(seconds) if seconds else None)


def test_retry_after_header_wins_over_message() -> None:
    error = error_from_response(
        429, {"Retry-After": "3"}, body("Please try again in 9s.", "tokens")
    )
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after_s == 3.0
    assert "about 3 s" in error.user_text


def test_tokens_type_429_is_a_wait_not_too_large() -> None:
    # Groq's TPM 429 also has type "tokens": it must stay retryable.
    error = error_from_response(429, {}, body("Request too large? no: try again in 1s", "tokens"))
    assert isinstance(error, UpstreamRateLimited)


def test_stream_error_without_status() -> None:
    from bot.llm.errors import error_from_payload

    assert isinstance(error_from_payload({"message": "boom"}), UpstreamServerError)
    too_large = {"message": "Request too large for model", "type": "tokens"}
    assert isinstance(error_from_payload(too_large), RequestTooLarge)


def test_the_key_never_appears_anywhere() -> None:
    leaky = [
        (401, body(f"Incorrect API key provided: {KEY}", code="invalid_api_key")),
        (400, body(f"bad header Authorization: Bearer {KEY}")),
        (404, body(f"The model `{KEY}` does not exist", code="model_not_found")),
        (429, body(f"Rate limit for {KEY}. Please try again in 1s", "tokens")),
        (500, KEY.encode()),
    ]
    for status, content in leaky:
        error = error_from_response(status, {}, content, secrets=[KEY])
        for text in (str(error), repr(error), error.user_text, error.detail, str(error.args)):
            assert KEY not in text, (status, text)


def test_key_shaped_tokens_are_scrubbed_even_when_unknown() -> None:
    other = "sk-proj-AbCdEf0123456789xyz"
    error = error_from_response(400, {}, body(f"key {other} is not valid here"))
    assert isinstance(error, BadRequest)
    assert other not in error.user_text and "[redacted]" in error.user_text


def test_long_api_messages_are_truncated() -> None:
    error = error_from_response(400, {}, body("x" * 5000))
    assert len(error.user_text) < 400


def test_transport_errors_name_the_host_only() -> None:
    base = "http://user:hunter2@127.0.0.1:9/openai/v1?token=abc"
    request = httpx.Request("POST", "http://127.0.0.1:9/openai/v1/chat/completions")
    with pytest.raises(UpstreamUnreachable) as caught, map_transport_errors(base):
        raise httpx.ConnectError("connection refused", request=request)
    text = caught.value.user_text
    assert "127.0.0.1:9" in text and "API_BASE_URL" in text
    assert "hunter2" not in str(caught.value) and "token=abc" not in str(caught.value)
    assert caught.value.retryable


def test_timeouts_and_other_exceptions() -> None:
    with pytest.raises(UpstreamUnreachable) as caught, map_transport_errors("https://api.groq.com"):
        raise httpx.ReadTimeout("timed out")
    assert "api.groq.com" in caught.value.user_text and "in time" in caught.value.user_text
    with pytest.raises(UpstreamServerError), map_transport_errors("https://api.groq.com"):
        raise httpx.DecodingError("bad gzip")
    with pytest.raises(KeyError), map_transport_errors("https://api.groq.com"):
        raise KeyError("not ours")


def test_base_url_host() -> None:
    assert base_url_host("https://api.groq.com/openai/v1") == "api.groq.com"
    assert base_url_host("http://localhost:11434/v1") == "localhost:11434"
    assert base_url_host("not a url") == "the configured API_BASE_URL"


GROQ_429 = (
    "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01abc` "
    "service tier `on_demand` on {what}: Limit {limit}, Used {used}, Requested {requested}. "
    "Please try again in 4.2s. Need more tokens? Upgrade to Dev Tier today at "
    "https://console.groq.com/settings/billing"
)


@pytest.mark.parametrize(
    ("what", "dim", "figures", "expected"),
    [
        ("tokens per minute (TPM)", "tpm", ("8000", "7421", "1102"), (8_000, 7_421, 1_102)),
        ("requests per minute (RPM)", "rpm", ("1000", "1000", "1"), (1_000, 1_000, 1)),
        ("requests per day (RPD)", "rpd", ("14400", "14400", "1"), (14_400, 14_400, 1)),
        (
            "tokens per day (TPD)",
            "tpd",
            ("500,000", "499,100", "~1,050"),
            (500_000, 499_100, 1_050),
        ),
    ],
)
def test_a_groq_429_message_names_the_limit_it_hit(
    what: str, dim: str, figures: tuple[str, str, str], expected: tuple[int, int, int]
) -> None:
    limit, used, requested = figures
    message = GROQ_429.format(what=what, limit=limit, used=used, requested=requested)
    found = exceeded_from_message(message)
    assert found is not None
    assert (found.dimension, found.limit, found.used, found.requested) == (dim, *expected)
    exceeded, retry = rate_limit_from_body(body(message, "tokens", "rate_limit_exceeded"))
    assert exceeded == found and retry == pytest.approx(4.2)


def test_a_413_names_the_tpm_limit_without_use() -> None:
    message = (
        "Request too large for model `m` in organization `org_x` service tier `on_demand` "
        "on tokens per minute (TPM): Limit 6000, Requested 7000, please reduce your message "
        "size and try again."
    )
    found = exceeded_from_message(message)
    assert found is not None
    assert (found.dimension, found.limit, found.used, found.requested) == (
        "tpm",
        6_000,
        None,
        7_000,
    )


@pytest.mark.parametrize("text", [b"", b"not json", b'{"error": {"message": "Slow down."}}'])
def test_bodies_without_figures_name_nothing(text: bytes) -> None:
    assert rate_limit_from_body(text) == (None, None)

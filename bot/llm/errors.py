"""The one place httpx exceptions and API error JSON become ``bot.errors`` classes.

``error_from_response`` maps an HTTP error response (or, with ``status=None``, an
error event inside a stream); ``map_transport_errors`` maps httpx exceptions;
``rate_limit_from_body`` reads what a rate-limit error says about the account. Every
user text is one actionable sentence; API messages are scrubbed of secrets and of
anything that looks like an API key before they are shown or logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

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
from bot.llm.headers import parse_duration

__all__ = [
    "ExceededLimit",
    "base_url_host",
    "error_from_payload",
    "error_from_response",
    "map_transport_errors",
    "rate_limit_from_body",
    "retry_after_from_message",
    "scrub",
]

_MAX_MESSAGE = 300
_RETRY_IN = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|h|m|s))+)", re.I)
# "maximum context length is 2048 tokens" (OpenAI, vLLM, llama-cpp-python), "context
# window of 2048" (llama-cpp-python's ValueError), "maximum model length of 2048" (vLLM),
# "context length of only 2048 tokens" (LM Studio), "must be <= 2048" (TGI). A figure
# written "128k" is not a token count: the lookahead refuses it.
_WINDOW_IN_MESSAGE = re.compile(
    r"(?:maximum context length is|context window of|maximum model length of|"
    r"context length of only|must be <=)\s+(\d[\d,]*)(?![\d,]|\s*[kKmM]\b)",
    re.I,
)
# "(1276 in the messages, ...)" (llama-cpp-python), "your messages resulted in 9000
# tokens" (OpenAI): the prompt as the server counted it.
_PROMPT_IN_MESSAGE = re.compile(
    r"(?:\(([\d,]+) in the messages|messages resulted in ([\d,]+) tokens)", re.I
)
# Groq's "… on tokens per minute (TPM): Limit 8000, Used 7421, Requested 1102. …" (also
# requests per minute/day, tokens per day; "Requested ~1102" in some; a 413 has no Used).
_EXCEEDED = re.compile(
    r"(requests|tokens)\s+per\s+(minute|day)(?:\s*\([A-Z]{3}\))?\s*:\s*"
    r"Limit\s*:?\s*~?([\d,]+)"
    r"(?:\s*,?\s*Used\s*:?\s*~?([\d,]+))?"
    r"(?:\s*,?\s*Requested\s*:?\s*~?([\d,]+))?",
    re.I,
)
_MODEL_IN_MESSAGE = re.compile(r"model\s+[`'\"]([^`'\"]+)[`'\"]", re.I)
# Shapes of common provider keys (Groq gsk_, OpenAI sk-/sk-proj-, bearer tokens), so a
# key the server echoes back never reaches a user even when we don't know its value.
_KEY_LIKE = re.compile(r"\b(?:gsk_|sk-|xai-|Bearer\s+)[A-Za-z0-9_\-*.]{6,}", re.I)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every known secret and every key-shaped token replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)


def base_url_host(base_url: str) -> str:
    """``host[:port]`` of the base URL: safe to show (no path, query or credentials)."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        return "the configured API_BASE_URL"
    if not url.host:
        return "the configured API_BASE_URL"
    return f"{url.host}:{url.port}" if url.port else url.host


def retry_after_from_message(message: str) -> float | None:
    """Seconds from Groq's "Please try again in 2.0325s" / "in 1m2.5s" / "in 585ms"."""
    match = _RETRY_IN.search(message)
    return parse_duration(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class ExceededLimit:
    """The limit a rate-limit error names: ``dimension`` is "rpm", "rpd", "tpm" or "tpd";
    ``used`` is the server's count without the refused request, ``requested`` that
    request (None when the message leaves them out)."""

    dimension: str
    limit: int
    used: int | None = None
    requested: int | None = None


def exceeded_from_message(message: str) -> ExceededLimit | None:
    """The limit named in Groq's "Rate limit reached … on tokens per minute (TPM): Limit
    8000, Used 7421, Requested 1102." (or a 413's "Limit 6000, Requested 7000")."""
    found = _EXCEEDED.search(message)
    if found is None:
        return None
    unit, period, limit, used, requested = found.groups()
    dim = f"{unit[0].lower()}p{period[0].lower()}"
    return ExceededLimit(dim, int(limit.replace(",", "")), _whole(used), _whole(requested))


def _whole(text: str | None) -> int | None:
    return int(text.replace(",", "")) if text else None


def rate_limit_from_body(
    body: bytes | str | Mapping[str, object] | None,
) -> tuple[ExceededLimit | None, float | None]:
    """What an error body says about the account: the limit it names and the seconds it
    says to wait (each None when it doesn't)."""
    message = _text(_error_dict(body).get("message"))
    return exceeded_from_message(message), retry_after_from_message(message)


def _error_dict(body: bytes | str | Mapping[str, object] | None) -> dict[str, object]:
    """The ``error`` object of an OpenAI-style error body; ``{}`` when there is none."""
    data: object = body
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            return {"message": text.strip()[:_MAX_MESSAGE]} if text.strip() else {}
    if not isinstance(data, Mapping):
        return {}
    error = data.get("error", data)
    if isinstance(error, str):  # some servers send {"error": "text"}
        return {"message": error}
    return dict(error) if isinstance(error, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str | Mapping[str, object] | None,
    *,
    model: str | None = None,
    secrets: Sequence[str] = (),
) -> UpstreamError:
    """Map an HTTP error response to the matching ``UpstreamError`` subclass."""
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = parse_duration(lowered.get("retry-after"))
    return error_from_payload(
        _error_dict(body), status=status, model=model, retry_after_s=retry_after, secrets=secrets
    )


def error_from_payload(
    error: Mapping[str, object],
    *,
    status: int | None = None,
    model: str | None = None,
    retry_after_s: float | None = None,
    secrets: Sequence[str] = (),
) -> UpstreamError:
    """Map an API ``error`` object; ``status`` is None for an error event inside a stream."""
    # Collapsed to one line and truncated: it may be shown to users.
    message = scrub(" ".join(_text(error.get("message")).split()), secrets)[:_MAX_MESSAGE]
    code = _text(error.get("code"))
    kind = _text(error.get("type"))
    detail = scrub(
        f"status={status} type={kind or '-'} code={code or '-'} message={message or '-'}", secrets
    )
    if retry_after_s is None:
        retry_after_s = retry_after_from_message(message)

    if status == 401 or code == "invalid_api_key":
        return AuthenticationFailed(status=status, detail=detail)
    if _too_large(status, code, kind, message):
        return RequestTooLarge(status=status, detail=detail)
    if status == 429 or code == "rate_limit_exceeded" or kind == "rate_limit_exceeded":
        return _rate_limited(status, retry_after_s, detail, exceeded_from_message(message))
    if _context_overflow(code, kind, message):
        return ContextTooLong(
            status=status,
            detail=detail,
            window=_window_of(error, message),
            prompt_tokens=_prompt_of(error, message),
        )
    if status == 404 or code in {"model_not_found", "model_decommissioned"}:
        return _model_unavailable(status, code, message, model, detail)
    # 498 is Groq's "flex tier capacity exceeded": a temporary capacity problem.
    if status is None or status >= 500 or status == 498:
        return UpstreamServerError(status=status, detail=detail)
    text = f"The model API rejected the request: {message.rstrip('.')}." if message else None
    return BadRequest(text, status=status, detail=detail)


def _context_overflow(code: str, kind: str, message: str) -> bool:
    # OpenAI, Groq, vLLM and llama-cpp-python say code context_length_exceeded; llama.cpp's
    # own server says type exceed_context_size_error ("...exceeds the available context
    # size..."); some servers say only the message.
    lowered = message.lower()
    return (
        code == "context_length_exceeded"
        or kind == "exceed_context_size_error"
        or "maximum context length" in lowered
        or "exceeds the available context size" in lowered
        or "exceed context window" in lowered
        or "maximum model length" in lowered
        or "context length of only" in lowered
        or ("max_new_tokens" in lowered and "must be <=" in lowered)
        or "configured limit of" in lowered
    )


def _prompt_of(error: Mapping[str, object], message: str) -> int | None:
    """The prompt's size as the server counted it: llama.cpp's ``n_prompt_tokens``, or
    the figure in the message."""
    counted = error.get("n_prompt_tokens")
    if isinstance(counted, int) and not isinstance(counted, bool) and counted > 0:
        return counted
    found = _PROMPT_IN_MESSAGE.search(message)
    if not found:
        return None
    return int((found.group(1) or found.group(2)).replace(",", ""))


def _window_of(error: Mapping[str, object], message: str) -> int | None:
    """The context size a refusal names: llama.cpp's ``n_ctx`` field, or "maximum context
    length is N tokens" (OpenAI, vLLM, llama-cpp-python), or "context window of N"."""
    n_ctx = error.get("n_ctx")
    if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0:
        return n_ctx
    found = _WINDOW_IN_MESSAGE.search(message)
    return int(found.group(1).replace(",", "")) if found else None


def _too_large(status: int | None, code: str, kind: str, message: str) -> bool:
    if status == 413 or code == "request_too_large":
        return True
    # Groq reports TPM-sized requests as type "tokens"; a 429 of that type is only a wait.
    return kind == "tokens" and status != 429 and "too large" in message.lower()


def _rate_limited(
    status: int | None, retry_after_s: float | None, detail: str, exceeded: ExceededLimit | None
) -> UpstreamError:
    text = None
    if retry_after_s is not None:
        text = (
            "The model API is rate-limiting us; please try again in about "
            f"{max(1, round(retry_after_s))} s."
        )
    return UpstreamRateLimited(
        text,
        status=status or 429,
        detail=detail,
        retry_after_s=retry_after_s,
        limit=exceeded.dimension if exceeded is not None else None,
    )


def _model_unavailable(
    status: int | None, code: str, message: str, model: str | None, detail: str
) -> UpstreamError:
    if model is None:
        found = _MODEL_IN_MESSAGE.search(message)
        model = found.group(1) if found else None
    if model is None:
        return ModelUnavailable(
            status=status, detail=detail, retired=code == "model_decommissioned"
        )
    retired = code == "model_decommissioned"
    if retired:
        text = f"The model `{model}` has been retired; pick another with /model (see /models)."
    else:
        text = f"The model `{model}` is not available; pick another with /model (see /models)."
    return ModelUnavailable(text, status=status, detail=detail, retired=retired)


@contextmanager
def map_transport_errors(base_url: str) -> Iterator[None]:
    """Translate httpx transport exceptions raised inside the block to ``UpstreamUnreachable``.

    The user text names the host only; httpx messages never contain request headers,
    so the key cannot leak through ``detail``.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        host = base_url_host(base_url)
        raise UpstreamUnreachable(
            f"The model API at {host} did not answer in time; please try again.",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    except httpx.TransportError as exc:
        host = base_url_host(base_url)
        raise UpstreamUnreachable(
            f"Could not reach the model API at {host}; check the network and API_BASE_URL.",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    except httpx.DecodingError as exc:  # a corrupt body: the server's fault, worth a retry
        raise UpstreamServerError(detail=f"{type(exc).__name__}: {exc}") from exc

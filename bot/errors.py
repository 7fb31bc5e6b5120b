"""The bot's exception tree. Foreign exceptions are translated into these once, at the boundary.

::

    BotError                      .user_text: one actionable sentence, never a secret
    ├── ConfigError               missing/invalid settings (start-up)
    ├── PlatformLost              an adapter lost its platform for good (the process exits)
    ├── UpstreamError             .status, .retryable
    │   ├── AuthenticationFailed  401
    │   ├── UpstreamRateLimited   429, .retry_after_s
    │   ├── RequestTooLarge       413, never retried
    │   ├── ContextTooLong        400 context_length_exceeded; .window when the server said
    │   ├── ModelUnavailable      404 / model_decommissioned / model_not_found
    │   ├── BadRequest            other 4xx
    │   ├── UpstreamServerError   5xx
    │   │   └── EmptyStream       a 200 stream that ended or broke before any byte
    │   ├── UpstreamUnreachable   connection errors and timeouts
    │   └── StreamInterrupted     the stream broke after the first token; .partial_text
    ├── QuotaExceeded             our own limiter; .scope, .retry_in_s
    ├── StoreError                database failures
    └── InputRejected             empty / oversized / unsupported input
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "BotError",
    "ConfigError",
    "ContextTooLong",
    "EmptyStream",
    "InputRejected",
    "ModelUnavailable",
    "PlatformLost",
    "QuotaExceeded",
    "RequestTooLarge",
    "StoreError",
    "StreamInterrupted",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "UpstreamUnreachable",
]


class BotError(Exception):
    """Base of every error the bot raises on purpose; ``user_text`` is safe to show."""

    default_text = "Something went wrong; please try again."

    def __init__(self, user_text: str | None = None, *, detail: str = "") -> None:
        self.user_text = user_text or self.default_text
        self.detail = detail
        super().__init__(self.user_text if not detail else f"{self.user_text} ({detail})")


class ConfigError(BotError):
    default_text = "The bot is misconfigured."


class PlatformLost(BotError):
    """An adapter reported its platform connection gone and beyond its own repair; the
    process exits non-zero so that a supervisor starts it afresh."""

    default_text = (
        "A chat platform connection was lost and could not be restored; exiting so that "
        "a supervisor (systemd, Docker's restart policy) restarts the bot."
    )


class UpstreamError(BotError):
    """The completions API answered with an error or could not be reached."""

    default_text = "The model API failed; please try again."
    retryable = False

    def __init__(
        self, user_text: str | None = None, *, status: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(user_text, detail=detail)
        self.status = status


class AuthenticationFailed(UpstreamError):
    default_text = "The API key was rejected: set a valid GROQ_API_KEY and restart the bot."


class UpstreamRateLimited(UpstreamError):
    default_text = "The model API is rate-limiting us; please try again shortly."
    retryable = True

    def __init__(
        self,
        user_text: str | None = None,
        *,
        status: int | None = 429,
        detail: str = "",
        retry_after_s: float | None = None,
        limit: str | None = None,
    ) -> None:
        super().__init__(user_text, status=status, detail=detail)
        self.retry_after_s = retry_after_s
        # The window the server says was hit ("tpd", "rpm"…), when its message names one.
        self.limit = limit


class RequestTooLarge(UpstreamError):
    default_text = (
        "This request is larger than the model's tokens-per-minute allowance; "
        "shorten the message, /reset the conversation, or pick another model."
    )


class ContextTooLong(UpstreamError):
    default_text = (
        "This conversation no longer fits the model's context window, even after dropping "
        "older messages: use /reset to start over, or send a shorter message."
    )

    def __init__(
        self,
        user_text: str | None = None,
        *,
        status: int | None = None,
        detail: str = "",
        window: int | None = None,
        prompt_tokens: int | None = None,
    ) -> None:
        super().__init__(user_text, status=status, detail=detail)
        # The context size, and the prompt's size, as the server counted them, when said.
        self.window = window
        self.prompt_tokens = prompt_tokens


class ModelUnavailable(UpstreamError):
    default_text = "That model is not available; pick another with /model (see /models)."

    def __init__(
        self,
        user_text: str | None = None,
        *,
        status: int | None = None,
        detail: str = "",
        retired: bool = False,
    ) -> None:
        super().__init__(user_text, status=status, detail=detail)
        self.retired = retired  # decommissioned, not merely unknown or unlisted


class BadRequest(UpstreamError):
    default_text = "The model API rejected the request."


class UpstreamServerError(UpstreamError):
    default_text = "The model API is having trouble right now; please try again in a minute."
    retryable = True


class EmptyStream(UpstreamServerError):
    """The server accepted a streamed request (HTTP 200) and then sent nothing at all.

    Seen from llama.cpp-based servers when the prompt overflows their context: the
    engine treats it as a possible overflow (trims and retries once) rather than
    retrying the same request, which would fail the same way.
    """

    default_text = (
        "The model server ended the answer without sending anything. If this conversation "
        "is long, use /reset or send a shorter message; otherwise please try again later."
    )
    retryable = False


class UpstreamUnreachable(UpstreamError):
    default_text = "The model API could not be reached; check the network and API_BASE_URL."
    retryable = True


class StreamInterrupted(UpstreamError):
    default_text = "The answer was cut off because the connection to the model API broke."

    def __init__(
        self, user_text: str | None = None, *, partial_text: str = "", detail: str = ""
    ) -> None:
        super().__init__(user_text, detail=detail)
        self.partial_text = partial_text


class QuotaExceeded(BotError):
    """Our own limiter refused the request. ``scope`` is "user" or "account"."""

    default_text = "You have reached your usage limit; please try again later."

    def __init__(
        self,
        user_text: str | None = None,
        *,
        scope: str = "user",
        retry_in_s: float = 0.0,
        notify: bool = True,
        detail: str = "",
    ) -> None:
        super().__init__(user_text, detail=detail)
        self.scope = scope
        self.retry_in_s = retry_in_s
        # False when the user was already told in this window: stay silent.
        self.notify = notify


class StoreError(BotError):
    default_text = (
        "The bot's database is unavailable; your message was not saved. Please try again."
    )


class InputRejected(BotError):
    default_text = "That message can't be processed."

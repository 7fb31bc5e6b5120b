"""Building the request context: token estimates, budgets, user content with attachments.

Pure functions; the engine feeds them what the store returned.
"""

from __future__ import annotations

from bot.errors import InputRejected
from bot.types import Attachment, ChatMessage, ModelInfo, StoredMessage

__all__ = [
    "CONSERVATIVE_CONTEXT_WINDOW",
    "build_messages",
    "estimate_tokens",
    "history_budget",
    "image_parts",
    "render_user_text",
    "supports_images",
]

CONSERVATIVE_CONTEXT_WINDOW = 4096
"""Assumed when neither the server nor CONTEXT_TOKEN_BUDGET gives a window: small on
purpose (an overflow is then rare, and one that happens lowers the figure for the model)."""

# Per-message framing overhead of chat templates, in tokens (OpenAI documents ~3-4).
_MESSAGE_OVERHEAD = 4
# Head-room for the estimate being low: chars/4 undercounts code and non-Latin text.
_SAFETY = 0.9

_VISION_MARKERS = ("llama-4", "vision", "gpt-4o", "gpt-4.1", "gpt-5", "llava", "gemma-3", "pixtral")


def estimate_tokens(text: str) -> int:
    """A cheap, conservative token estimate (about four characters per token)."""
    return _MESSAGE_OVERHEAD + (len(text) + 3) // 4


def history_budget(
    model: ModelInfo, *, max_output_tokens: int, system_prompt: str, cap: int | None
) -> int:
    """Tokens available for history: the window minus reserved output and system prompt."""
    output = max_output_tokens
    if model.max_completion_tokens:
        output = min(output, model.max_completion_tokens)
    budget = int(model.context_window * _SAFETY) - output - estimate_tokens(system_prompt)
    if cap is not None:
        budget = min(budget, cap)
    return max(budget, 0)


def supports_images(model: str) -> bool:
    """Whether a model id names a vision-capable model (a heuristic over known families)."""
    name = model.lower()
    return any(marker in name for marker in _VISION_MARKERS)


def render_user_text(text: str, attachments: tuple[Attachment, ...]) -> str:
    """The user's text with text attachments inlined as fenced blocks."""
    parts = [text.strip()] if text.strip() else []
    for att in attachments:
        if att.data is not None and not att.mime_type.startswith("image/"):
            body = att.data.decode("utf-8", errors="replace")
            parts.append(f"Attached file `{att.filename}`:\n```\n{body}\n```")
    return "\n\n".join(parts)


def image_parts(text: str, attachments: tuple[Attachment, ...]) -> tuple[dict[str, object], ...]:
    """OpenAI content parts for a user turn carrying images."""
    parts: list[dict[str, object]] = [{"type": "text", "text": text or "(image)"}]
    for att in attachments:
        if att.mime_type.startswith("image/") and att.url:
            parts.append({"type": "image_url", "image_url": {"url": att.url}})
    return tuple(parts)


def build_messages(
    system_prompt: str,
    history: list[StoredMessage],
    *,
    current: ChatMessage | None = None,
) -> tuple[ChatMessage, ...]:
    """System prompt first (never trimmed), then history oldest first.

    ``current`` replaces the newest history entry (the turn just stored) when the
    request needs richer content than the store keeps, such as images.
    """
    if not history:
        raise InputRejected(
            "Your message is too long for this model's context window; "
            "shorten it or pick a model with a larger context."
        )
    messages = [ChatMessage(role="system", content=system_prompt)] if system_prompt else []
    messages.extend(ChatMessage(role=m.role, content=m.content) for m in history)
    if current is not None:
        messages[-1] = current
    return tuple(messages)

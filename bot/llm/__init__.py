"""The OpenAI-compatible completions client (Groq by default) and its pure helpers."""

from bot.llm.client import CompletionsClient, build_body

__all__ = ["CompletionsClient", "build_body"]

"""Pure text conversion for Slack: Markdown → mrkdwn, and mention neutralising.

Model output is Markdown. A message's ``text`` field is Slack mrkdwn (``*bold*``,
``<url|label>``, ``&lt;`` escapes); streamed ``markdown_text`` is standard Markdown
that Slack renders itself. Either way nothing the model (or a quoted user) writes may
ping anyone: ``<!channel>``, ``<!here>``, ``<!everyone>``, ``<!subteam^…>`` and
``<@U…>`` are control sequences, and ``@channel`` / ``@here`` / ``@everyone`` typed as
words are expanded when an app posts with ``link_names``. In mrkdwn ``&``, ``<`` and
``>`` are escaped (Slack's rule), which turns every control sequence into plain text;
in Markdown, where escapes are not guaranteed to be decoded, a zero-width space is put
after the ``<`` or ``@`` that starts one. Raw ``@channel`` words get the same space
in both.
"""

from __future__ import annotations

import re

__all__ = [
    "ZWSP",
    "escape",
    "neutralise",
    "neutralise_markdown",
    "pending_tail",
    "to_mrkdwn",
    "unescape_incoming",
]

ZWSP = "\u200b"

# Sequences that notify people, each defused by a zero-width space after its first char.
_TOKENS: tuple[str, ...] = ("<@", "<!channel", "<!here", "<!everyone", "<!subteam^")
_TOKENS += ("@channel", "@here", "@everyone")
_CONTROL = re.compile(r"<(?=@|!(?:channel|here|everyone|subteam\^))", re.IGNORECASE)
_MASS = re.compile(r"@(?=channel|here|everyone)", re.IGNORECASE)
_LONGEST = max(len(t) for t in _TOKENS)

_FENCE = re.compile(r"^ {0,3}(`{3,})(.*)$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"\[([^\]\n]+)\]\(((?:https?|mailto):[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(?=\S)")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?")
_BOLD_MARK = "\x00"  # stands in for mrkdwn's "*" until italics are converted


def escape(text: str) -> str:
    """Slack's three mrkdwn escapes; control sequences become plain text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def neutralise(text: str) -> str:
    """Defuse mass mentions typed as words (``@here``) in already-escaped text."""
    return _MASS.sub("@" + ZWSP, text)


def neutralise_markdown(text: str) -> str:
    """Defuse every mention sequence in Markdown without relying on HTML escapes."""
    return _MASS.sub("@" + ZWSP, _CONTROL.sub("<" + ZWSP, text))


def pending_tail(text: str) -> int:
    """Where a trailing, possibly unfinished mention sequence starts (``len`` if none).

    ``neutralise_markdown`` of a streamed text is only final up to that index: "<"
    followed later by "@" needs a space *before* the "@", after the "<" was sent.
    """
    for start in range(max(0, len(text) - _LONGEST + 1), len(text)):
        if text[start] not in "<@":
            continue
        tail = text[start:].lower()
        if any(len(tail) < len(t) and t.startswith(tail) for t in _TOKENS):
            return start
    return len(text)


def unescape_incoming(text: str) -> str:
    """A user's Slack text as plain text for the model.

    ``<@U1>`` → ``@U1``, ``<#C1|general>`` → ``#general``, ``<url|label>`` →
    ``label (url)``, ``<url>`` → ``url``, ``<!here>`` → ``@here``; then the escapes.
    """

    def plain(match: re.Match[str]) -> str:
        body, _, label = match[1].partition("|")
        if body.startswith(("@", "#")):
            return body[0] + (label or body[1:])
        if body.startswith("!"):
            return "@" + (label or body[1:].split("^")[0])
        return f"{label} ({body})" if label and label != body else body

    text = re.sub(r"<([^<>\n]+)>", plain, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def to_mrkdwn(markdown: str) -> str:
    """Markdown → Slack mrkdwn, escaped and with mass mentions defused.

    Bold, italics, strikethrough, links, headings (bold lines), bullets (•) and quotes
    are converted; code (fenced or inline) keeps its text, escaped only. A fence left
    open at the end (a reply still streaming) is closed so the rest renders as code.
    """
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None  # the open fence's backticks
    for line in markdown.split("\n"):
        match = _FENCE.match(line)
        if fence is None and match is None:
            prose.append(line)
            continue
        if prose:
            out.append(_prose("\n".join(prose)))
            prose = []
        if match is not None and (fence is None or match[1].startswith(fence)):
            # Slack shows a language tag as code text: drop it.
            fence = match[1] if fence is None else None
            out.append("```")
        else:
            out.append(escape(line))
    if prose:
        out.append(_prose("\n".join(prose)))
    if fence is not None:
        out.append("```")
    return "\n".join(out)


def _prose(text: str) -> str:
    """Convert text outside fences, leaving inline code spans alone."""
    parts: list[str] = []
    last = 0
    for match in _INLINE_CODE.finditer(text):
        parts.append(_inline(text[last : match.start()]))
        parts.append(f"`{escape(match[2])}`")
        last = match.end()
    parts.append(_inline(text[last:]))
    return "".join(parts)


def _inline(text: str) -> str:
    lines = [_line(line) for line in text.split("\n")]
    text = "\n".join(lines)
    text = _LINK.sub(lambda m: f"<{m[2]}|{m[1].replace('|', '¦')}>", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m[1] or m[2]}{_BOLD_MARK}", text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    return neutralise(text.replace(_BOLD_MARK, "*"))


def _line(line: str) -> str:
    """Block-level syntax of one line, with the line's text escaped."""
    heading = _HEADING.match(line)
    if heading is not None:
        title = heading[1].replace("**", "").replace("__", "")
        return f"{_BOLD_MARK}{escape(title)}{_BOLD_MARK}"
    quote = _QUOTE.match(line)
    if quote is not None:
        # A quote's ">" must stay literal for Slack to render it.
        return ">" + (" " if line[quote.end() :] else "") + _line(line[quote.end() :])
    bullet = _BULLET.match(line)
    if bullet is not None:
        return f"{bullet[1]}• {escape(line[bullet.end() :])}"
    return escape(line)

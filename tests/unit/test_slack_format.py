"""adapters.slack.format: Markdown → mrkdwn, and nothing the model writes pings anyone."""

from __future__ import annotations

import re

import pytest

from adapters.slack.format import (
    ZWSP,
    escape,
    neutralise_markdown,
    pending_tail,
    to_mrkdwn,
    unescape_incoming,
)

PINGS = [
    "<!channel>",
    "<!here>",
    "<!here|here>",
    "<!everyone>",
    "<@U0123ABCD>",
    "<@W0123ABCD|bob>",
    "<!subteam^S0123|devs>",
    "@channel",
    "@here",
    "@everyone",
    "@Channel",
    "@HERE",
]
DANGEROUS = re.compile(r"<[@!]|@(channel|here|everyone)", re.IGNORECASE)


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __strong__", "*bold* and *strong*"),
        ("*italic* and _also_", "_italic_ and _also_"),
        ("~~gone~~", "~gone~"),
        (
            "[the docs](https://example.com/a?b=1&c=2)",
            "<https://example.com/a?b=1&amp;c=2|the docs>",
        ),
        ("# Title", "*Title*"),
        ("### A **bold** heading ##", "*A bold heading*"),
        ("- one\n* two\n  + nested", "• one\n• two\n  • nested"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> quoted <b>", "> quoted &lt;b&gt;"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("2 * 3 * 4", "2 * 3 * 4"),
        ("intraword my__dunder__name", "intraword my__dunder__name"),
        ("keep `**code** <x>` inline", "keep `**code** &lt;x&gt;` inline"),
    ],
)
def test_markdown_becomes_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_fenced_code_keeps_its_text_escaped_and_loses_the_language() -> None:
    md = "Look:\n```python\nif a < b and **c**:\n    print('@here')\n```\nDone **now**"
    assert to_mrkdwn(md) == (
        "Look:\n```\nif a &lt; b and **c**:\n    print('@here')\n```\nDone *now*"
    )


def test_an_open_fence_is_closed_so_a_streaming_reply_renders() -> None:
    assert to_mrkdwn("Code:\n```js\nlet x = 1;") == "Code:\n```\nlet x = 1;\n```"


@pytest.mark.parametrize("ping", PINGS)
def test_mrkdwn_never_pings(ping: str) -> None:
    text = to_mrkdwn(f"hey {ping} please **look**")
    assert not DANGEROUS.search(text), text
    assert "*look*" in text


@pytest.mark.parametrize("ping", PINGS)
def test_streamed_markdown_never_pings(ping: str) -> None:
    text = neutralise_markdown(f"hey {ping} please")
    assert not DANGEROUS.search(text), text
    assert text.replace(ZWSP, "") == f"hey {ping} please"  # only invisible changes


def test_harmless_angle_brackets_and_emails_are_left_alone() -> None:
    text = "<!-- a comment --> <div> a<b user@example.com #channel"
    assert neutralise_markdown(text) == text


def test_escape_is_slack_three_entities() -> None:
    assert escape("<&>") == "&lt;&amp;&gt;"


@pytest.mark.parametrize(
    "text",
    [
        "Hi <@U0ALICE000> and @here ok",
        "a<!channel> b <!subteam^S1|x> @everyone!",
        "<<@@here <!here> @@channel <<!everyone>",
        "no mentions at all, just <b> and @bob",
    ],
)
def test_streaming_prefixes_only_ever_grow(text: str) -> None:
    """Sending ``neutralise_markdown`` of the stable part of each prefix never has to
    take back a character: each is a prefix of the final neutralised text."""
    final = neutralise_markdown(text)
    for size in range(len(text) + 1):
        prefix = text[:size]
        stable = neutralise_markdown(prefix[: pending_tail(prefix)])
        assert final.startswith(stable), (prefix, stable)


@pytest.mark.parametrize(
    ("text", "tail"),
    [("abc <", 4), ("abc <!he", 4), ("abc @her", 4), ("abc @herb", 9), ("x <@", 3), ("ok", 2)],
)
def test_pending_tail_marks_unfinished_sequences(text: str, tail: int) -> None:
    assert pending_tail(text) == tail


def test_incoming_text_is_made_plain_for_the_model() -> None:
    slack = "<@U1> hi &lt;b&gt; &amp; <https://x.com|site> <#C1|general> <!here> <https://y.com>"
    assert unescape_incoming(slack) == (
        "@U1 hi <b> & site (https://x.com) #general @here https://y.com"
    )

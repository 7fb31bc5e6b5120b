"""Where Discord attachments may be downloaded from (pure: no download is made)."""

from __future__ import annotations

from adapters.discord.attachments import CdnPolicy


def test_only_discords_cdn_over_https_by_default() -> None:
    policy = CdnPolicy.for_api_base(None)
    assert policy.allows("https://cdn.discordapp.com/attachments/1/2/notes.txt")
    assert policy.allows("https://media.discordapp.net/attachments/1/2/cat.png?size=64")
    assert not policy.allows("http://cdn.discordapp.com/attachments/1/2/notes.txt")
    assert not policy.allows("https://cdn.discordapp.com.evil.example/notes.txt")
    assert not policy.allows("https://cdn.discordapp.com:8443/notes.txt")
    assert not policy.allows("http://127.0.0.1:8080/cdn/1/notes.txt")
    assert not policy.allows("not a url") and not policy.allows("/relative/notes.txt")


def test_a_configured_api_base_adds_exactly_its_origin() -> None:
    policy = CdnPolicy.for_api_base("http://127.0.0.1:8080/api/v10")
    assert policy.allows("http://127.0.0.1:8080/cdn/1/notes.txt")
    assert policy.allows("https://cdn.discordapp.com/attachments/1/2/notes.txt")
    assert not policy.allows("http://127.0.0.1:8081/cdn/1/notes.txt")
    assert not policy.allows("https://127.0.0.1:8080/cdn/1/notes.txt")
    assert not policy.allows("http://localhost:8080/cdn/1/notes.txt")

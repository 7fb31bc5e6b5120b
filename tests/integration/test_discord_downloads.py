"""Attachment downloads that fail before any byte: refused, or not Discord's CDN.

(Downloads through the fake CDN, lying about their size, dropping or hanging, are in
``tests/e2e/discord/test_discord_adapter.py``.)"""

from __future__ import annotations

import socket

import pytest

from adapters.discord.attachments import CdnPolicy, Downloader, DownloadFailed


async def test_refused_connection_and_foreign_host_raise_download_failed() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    downloader = Downloader(CdnPolicy.for_api_base(f"http://127.0.0.1:{port}/api/v10"))
    try:
        with pytest.raises(DownloadFailed, match="could not be reached"):
            await downloader.fetch(f"http://127.0.0.1:{port}/cdn/1/a.txt", max_bytes=100)
        with pytest.raises(DownloadFailed, match="not hosted on Discord's CDN"):
            await downloader.fetch("https://files.example.com/a.txt", max_bytes=100)
    finally:
        await downloader.aclose()

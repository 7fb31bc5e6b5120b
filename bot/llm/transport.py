"""``AiohttpTransport``: httpx requests sent over an aiohttp ``ClientSession``.

httpx stays the client API; only the bytes move through aiohttp (already a dependency).
httpx's default transport (httpcore, h11, anyio) spent about 70 µs of CPU per streamed
event on nested body iterators and a re-armed cancel scope per read; aiohttp reads each
network chunk in C (``benchmarks/bench_hotpath.py``). aiohttp's exceptions are turned
into the httpx ones the default transport raises for the same failure, so
``bot.llm.errors.map_transport_errors`` maps both alike.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """aiohttp's exception → the httpx exception for the same failure."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        # What h11 says of a peer that closes early: a protocol error, not a timeout.
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
    except aiohttp.ClientResponseError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except aiohttp.ClientConnectionError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc) or type(exc).__name__) from exc


class _Body(httpx.AsyncByteStream):
    """A response body: each network read as it arrives."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # An unfinished body closes its connection; a finished one goes back to the pool.
        self._response.release()
        with contextlib.suppress(aiohttp.ClientError):
            await self._response.wait_for_close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One ``aiohttp.ClientSession`` (made at the first request, inside the loop) with
    at most ``max_connections`` connections; the request's httpx timeouts apply
    (``read`` per socket read, ``connect``, ``pool`` for getting a connection).

    Like httpx's default, it verifies TLS with httpx's context (made at the first https
    request: loading the CA bundle costs ~1 MB that a local http server never needs) and
    honours the proxy environment variables; it speaks HTTP/1.1 only, and sends request
    bodies held in memory (the client's JSON), not streamed ones.
    """

    def __init__(self, *, max_connections: int = 100, keepalive_expiry_s: float = 5.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_expiry_s
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=True, auto_decompress=False
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        session = self._get_session()
        tls: ssl.SSLContext | bool = True  # unused for http
        if request.url.scheme == "https":
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            tls = self._tls
        with _mapped():
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                compress=False,
                ssl=tls,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
            )
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

"""What keeps the service bounded against slow, large or hostile requests.

- :func:`header_deadline_protocol`: uvicorn's h11 protocol plus a deadline on each request's
  header block (uvicorn has none: a connection that never finishes its headers, or never
  sends a byte, is otherwise held forever). Past it the client gets a 408 and is closed.
- :class:`UploadGate`: pure ASGI middleware in front of the scoring routes. It refuses a
  declared ``Content-Length`` over the limit at once (413), reads the body into a spooled
  temporary file under a deadline (408 past it) and a byte limit (413), and only then counts
  the request against the admission limit (503 over it). A slow upload therefore holds a
  connection until its deadline, never an admission slot.
- :func:`decode_limit_seconds`: the decode budget in samples × channels, checked against the
  container header before a sample is decoded.
- :func:`scrub_paths`: no absolute path of the server leaves in a response.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from typing import Any

from apexmusic.errors import AudioContentError

MB = 1024 * 1024
_SPOOL_IN_MEMORY = 1 * MB  # larger bodies go to a temporary file
_REPLAY_CHUNK = 256 * 1024


# ---- header deadline ---------------------------------------------------------------------------


def header_deadline_protocol(timeout_s: float) -> type:
    """A uvicorn ``http=`` protocol class that answers 408 and closes a connection whose request
    headers are not complete ``timeout_s`` after it opened (or after the first byte of a
    keep-alive connection's next request)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineH11(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer: asyncio.TimerHandle | None = None
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self._header_timer is None:
                    self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            body = json.dumps(error_body("timeout", f"request headers not received within {timeout_s:g} s"))
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}".encode()
            )
            self.transport.close()

    return HeaderDeadlineH11


# ---- body deadline and admission -----------------------------------------------------------


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class UploadGate:
    """Pure ASGI middleware in front of the scoring routes (``body_limits``: path → bytes).

    In order: a declared ``Content-Length`` over the limit → 413 before a byte is read; more
    than ``max_uploading`` bodies arriving at once → 503; the body read within
    ``body_timeout_s`` (else 408) and ``body_limits`` bytes (else 413); then at most
    ``limit`` requests admitted to decoding and scoring (queued or running), else 503. The
    app reads the buffered body as if it were arriving.
    """

    def __init__(
        self,
        app: Any,
        limit: int,
        max_uploading: int,
        body_timeout_s: float,
        retry_after_s: int,
        state: dict[str, int],
        body_limits: dict[str, int],
    ):
        self.app, self.limit, self.max_uploading = app, limit, max_uploading
        self.body_timeout_s, self.retry_after_s = body_timeout_s, retry_after_s
        self.state, self.body_limits = state, body_limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in self.body_limits or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.body_limits[path]
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_json(send, 413, error_body("too_large", _too_large(declared, limit)), close=True)
            return
        if self.state["uploading"] >= self.max_uploading:
            await self._busy(send, "too many uploads in progress; retry shortly")
            return
        body = await self._receive_body(receive, send, limit)
        if body is None:
            return
        try:
            if self.state["active"] >= self.limit:
                await self._busy(send, "the server is busy; retry shortly")
                return
            self.state["active"] += 1
            try:
                await self.app(scope, _replay(body, receive), send)
            finally:
                self.state["active"] -= 1
        finally:
            body.close()

    async def _receive_body(self, receive: Any, send: Any, limit: int) -> Any | None:
        """The whole body in a spooled file, or None once an error has been answered."""
        self.state["uploading"] += 1
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        try:
            async with asyncio.timeout(self.body_timeout_s):
                await _read_into(receive, spool, limit)
            return spool
        except TimeoutError:
            self.state["timed_out"] += 1
            message = f"request body not received within {self.body_timeout_s:g} s"
            await _send_json(send, 408, error_body("timeout", message), close=True)
        except _TooLarge:
            await _send_json(send, 413, error_body("too_large", _too_large(None, limit)), close=True)
        except _ClientGone:
            pass
        finally:
            self.state["uploading"] -= 1
        spool.close()
        return None

    async def _busy(self, send: Any, message: str) -> None:
        self.state["rejected"] += 1
        await _send_json(
            send,
            503,
            error_body("busy", message),
            headers=[(b"retry-after", str(self.retry_after_s).encode())],
        )


async def _read_into(receive: Any, spool: Any, limit: int) -> None:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        spool.write(chunk)
        if not message.get("more_body", False):
            return


def _replay(spool: Any, receive: Any) -> Any:
    """An ASGI ``receive`` that hands out the buffered body, then defers to the real one (so a
    disconnect while the response is produced is still seen)."""
    size = spool.seek(0, os.SEEK_END)
    spool.seek(0)
    done = False

    async def replay() -> dict:
        nonlocal done
        if done:
            return await receive()
        chunk = spool.read(_REPLAY_CHUNK)
        done = spool.tell() >= size
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replay


def _too_large(declared: int | None, limit: int) -> str:
    size = f"request body of {declared / MB:.1f} MB" if declared is not None else "request body"
    return f"{size} is over the {limit / MB:.1f} MB limit"


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def error_body(kind: str, message: str) -> dict[str, str]:
    return {"error": kind, "detail": scrub_paths(message)}


async def _send_json(
    send: Any,
    status: int,
    body: dict,
    headers: list[tuple[bytes, bytes]] | None = None,
    close: bool = False,
) -> None:
    """A JSON response from middleware; ``close`` ends the connection (the rest of an unread
    body is never read)."""
    payload = json.dumps(body).encode()
    extra = [*(headers or []), *([(b"connection", b"close")] if close else [])]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# ---- decode budget -----------------------------------------------------------------------------


def decode_limit_seconds(path: str | os.PathLike, budget: float, max_seconds: float) -> float:
    """The longest decode allowed for ``path`` under ``budget`` samples × channels.

    Reads only the container header: when it states a duration whose samples × channels
    exceed ``budget`` this raises AudioContentError before any decoding. Otherwise it returns
    ``min(max_seconds, budget / (rate × channels))``, the limit to decode under, so a header
    without a duration cannot overrun the budget either. A file PyAV cannot open returns
    ``max_seconds`` (the decoder then reports it as usual).
    """
    import av

    try:
        container = av.open("file:" + os.path.abspath(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return max_seconds
    try:
        if not container.streams.audio:
            return max_seconds
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        channels = int(stream.codec_context.channels or 0)
        duration = _header_duration(container, stream)
    finally:
        container.close()
    if rate <= 0 or channels <= 0:
        return max_seconds
    if duration is not None and duration * rate * channels > budget:
        too_long = f" and longer than the {max_seconds:g} s limit" if duration > max_seconds else ""
        raise AudioContentError(
            f"{channels} channels at {rate} Hz for {duration:.0f} s is {duration * rate * channels:.3g} "
            f"samples to decode, over the service's budget of {budget:.3g}{too_long}; not decoded"
        )
    return min(max_seconds, budget / (rate * channels))


def _header_duration(container: Any, stream: Any) -> float | None:
    if container.duration:
        return container.duration / 1_000_000
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


# ---- no server paths in responses ------------------------------------------------------------

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\-])(?:~|[A-Za-z]:)?[/\\][^\s\"'<>|,;()\[\]{}]+")


def scrub_paths(value: Any) -> Any:
    """``value`` with every absolute path inside its strings (POSIX, ``~/``, ``C:\\``) cut to its
    last component; lists and dicts are walked. Relative names (``m-a-p/MERT-v1-95M``), URLs
    and fractions are left alone."""
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(_last_part, value)
    if isinstance(value, dict):
        return {key: scrub_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_paths(item) for item in value]
    return value


def _last_part(match: re.Match) -> str:
    parts = [p for p in re.split(r"[/\\]", match.group(0)) if p and p != "~" and not p.endswith(":")]
    return parts[-1] if parts else "…"

"""The host <-> agent wire protocol (DESIGN §4).

Frames are a 4-byte big-endian length followed by a msgpack body; every body is one tagged
msgspec Struct (field ``t`` names the message). The host decodes agent messages strictly: unknown
tags or fields, wrong types, over-long strings or lists and oversized frames raise a
:class:`ProtocolError`. Nothing the agent sends is ever imported, unpickled or evaluated.

This module is imported inside the sandbox, so it depends on the standard library and msgspec only.
"""

from __future__ import annotations

import os
import select
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

PROTOCOL_VERSION = 1
MAX_HOST_FRAME = 64 * 1024 * 1024
MAX_AGENT_FRAME = 4 * 1024 * 1024
MAX_ORDERS_PER_STEP = 1000
MAX_REASONING = 4000
MAX_ACCESSES = 4096
MAX_INDICATORS = 512
MAX_HOOK_ERRORS = 8
MAX_TRACEBACK = 32_000
MAX_MESSAGE = 4000

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE)]
_Name = Annotated[str, msgspec.Meta(max_length=200)]
_Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_IndicatorValue = float | None | Annotated[list[float | None], msgspec.Meta(max_length=16)]
ParamValue = bool | int | float | str | None

OrderTypeName = Literal["market", "limit", "stop", "stop_limit"]
EventStatusName = Literal[
    "submitted", "accepted", "partial", "completed", "cancelled", "expired", "margin", "rejected"
]
FieldName = Literal["datetime", "open", "high", "low", "close", "volume", "openinterest"]
ErrorKind = Literal["invalid_agent", "protocol"]


class ProtocolError(Exception):
    """A frame or message that breaks the protocol (too large, malformed, unexpected)."""


class ChannelClosed(ProtocolError):
    """The other side closed its end of the pipe."""


class ChannelTimeout(ProtocolError):
    """No complete message arrived (or could be written) within the deadline."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every message: unknown fields are an error."""


# -- host -> agent ------------------------------------------------------------------------------


class WireBar(_Strict, array_like=True):
    """One OHLCV bar."""

    open: float
    high: float
    low: float
    close: float
    volume: float


class WireEvent(_Strict, array_like=True):
    """A change of an order's status with its fill (size signed, 0 when nothing filled)."""

    id: str
    status: EventStatusName
    size: float = 0.0
    price: float = 0.0
    commission: float = 0.0


class WirePosition(_Strict, array_like=True):
    """A holding in the host ledger: signed size and average price."""

    size: float
    price: float


class Start(_Strict, tag="start", tag_field="t"):
    """Opens a session: what the agent trades and how the host's broker is set up."""

    version: int
    symbols: list[str]
    cash: float
    commission: float
    record_decisions: bool = False
    params: dict[str, ParamValue] = {}


class StepMsg(_Strict, tag="step", tag_field="t"):
    """One timestep: the bars of this step only, order events since the last step and the
    authoritative account (cash, value at this step's closes, non-zero positions)."""

    seq: int
    ts: datetime
    bars: dict[str, WireBar]
    cash: float
    value: float
    events: list[WireEvent] = []
    positions: dict[str, WirePosition] = {}
    live: bool = True  # False for a paper session's warm-up bars


class End(_Strict, tag="end", tag_field="t"):
    """No more steps: the agent runs its ``stop()`` and answers :class:`Done`."""


HostMessage = Start | StepMsg | End


# -- agent -> host ------------------------------------------------------------------------------


class Ready(_Strict, tag="ready", tag_field="t"):
    """The agent file loaded and its strategy class was found."""

    version: int
    strategy: _Name


class Error(_Strict, tag="error", tag_field="t"):
    """The session could not start (``invalid_agent``: the file is not a usable agent)."""

    kind: ErrorKind
    message: _Text
    traceback: Annotated[str, msgspec.Meta(max_length=MAX_TRACEBACK)] = ""


class WireOrder(_Strict):
    """A new order. ``size`` is signed (positive buys). ``price`` is the limit or stop price
    (``None`` for market orders); ``limit_price`` the limit of a stop-limit order."""

    id: _Id
    symbol: _Symbol
    size: float
    type: OrderTypeName
    price: float | None = None
    limit_price: float | None = None
    valid_until: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class Access(_Strict, array_like=True):
    """One read of a data feed by the strategy's ``next()``: ``index`` is Backtrader's ``ago``."""

    symbol: _Symbol
    field: FieldName
    index: int


class Decision(_Strict, tag="decision", tag_field="t"):
    """The agent's answer to step ``seq``: new orders, cancels and the FMEL fields.

    The FMEL fields are only filled when the session records decisions; ``next_called`` says
    whether the strategy's ``next()`` ran at this step (not during its warm-up).
    """

    seq: int
    orders: Annotated[list[WireOrder], msgspec.Meta(max_length=MAX_ORDERS_PER_STEP)] = []
    cancels: Annotated[list[_Id], msgspec.Meta(max_length=MAX_ORDERS_PER_STEP)] = []
    next_called: bool = False
    reasoning: Annotated[str, msgspec.Meta(max_length=MAX_REASONING)] | None = None
    confidence: _Unit | None = None
    indicators: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=128)], _IndicatorValue],
        msgspec.Meta(max_length=MAX_INDICATORS),
    ] = {}
    accesses: Annotated[list[Access], msgspec.Meta(max_length=MAX_ACCESSES)] = []
    accesses_dropped: Annotated[int, msgspec.Meta(ge=0)] = 0
    hook_errors: Annotated[list[_Text], msgspec.Meta(max_length=MAX_HOOK_ERRORS)] = []


class Failed(_Strict, tag="failed", tag_field="t"):
    """The agent raised: exception type, message and a traceback of the agent's frames only."""

    type: _Name
    message: _Text
    traceback: Annotated[str, msgspec.Meta(max_length=MAX_TRACEBACK)] = ""


class Done(_Strict, tag="done", tag_field="t"):
    """The agent finished after :class:`End`."""


AgentMessage = Ready | Error | Decision | Failed | Done


# -- framing ------------------------------------------------------------------------------------


class Channel:
    """Length-prefixed msgpack frames over two pipe file descriptors.

    ``incoming`` is the union of message types this side accepts (``HostMessage`` or
    ``AgentMessage``) and ``max_frame`` the largest body it reads. Timeouts are in seconds;
    ``None`` waits forever.
    """

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        incoming: Any,
        max_frame: int,
    ) -> None:
        self._rfd = read_fd
        self._wfd = write_fd
        self._max = max_frame
        self._buf = bytearray()
        self._out = bytearray()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[HostMessage | AgentMessage] = (
            msgspec.msgpack.Decoder(incoming)
        )
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)

    def send(self, msg: HostMessage | AgentMessage, timeout: float | None = None) -> None:
        """Write one framed message; raise :class:`ChannelClosed` if the reader is gone."""
        out = self._out
        self._encoder.encode_into(msg, out, 4)
        out[:4] = (len(out) - 4).to_bytes(4, "big")
        view = memoryview(out)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while view:
                try:
                    view = view[os.write(self._wfd, view) :]
                except BlockingIOError:
                    self._wait(self._wfd, select.POLLOUT, deadline)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    raise ChannelClosed("the other side closed the pipe") from exc
        finally:
            view.release()

    def recv(self, timeout: float | None = None) -> HostMessage | AgentMessage:
        """Read one message, validated against ``incoming``."""
        buf = self._buf
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                if size > self._max:
                    raise ProtocolError(f"frame of {size} bytes exceeds the {self._max} limit")
                if len(buf) >= 4 + size:
                    body = bytes(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    return self.decode(body)
                want = 4 + size - len(buf)
            else:
                want = 4 - len(buf)
            try:
                chunk = os.read(self._rfd, max(want, 65536))
            except BlockingIOError:
                self._wait(self._rfd, select.POLLIN, deadline)
                continue
            if not chunk:
                raise ChannelClosed("the other side closed the pipe")
            buf += chunk

    def decode(self, body: bytes) -> HostMessage | AgentMessage:
        """Decode one frame body; any schema violation is a :class:`ProtocolError`."""
        try:
            return self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"invalid message: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"undecodable message: {exc}") from exc

    @staticmethod
    def _wait(fd: int, event: int, deadline: float | None) -> None:
        poller = select.poll()
        poller.register(fd, event)
        if deadline is None:
            poller.poll()
            return
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise ChannelTimeout("timed out waiting for the other side")

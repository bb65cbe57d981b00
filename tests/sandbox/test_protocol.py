"""The wire protocol: framing, size caps and strict validation of agent messages."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from farm.sandbox.protocol import (
    MAX_ACCESSES,
    MAX_ORDERS_PER_STEP,
    MAX_REASONING,
    PROTOCOL_VERSION,
    Access,
    AgentMessage,
    Channel,
    ChannelClosed,
    ChannelTimeout,
    Decision,
    Done,
    End,
    Failed,
    HostMessage,
    ProtocolError,
    Ready,
    Start,
    StepMsg,
    WireBar,
    WireEvent,
    WireOrder,
    WirePosition,
)

TS = datetime(2024, 1, 2, 4, tzinfo=UTC)


class Pair:
    """A host channel and an agent channel joined by two pipes, plus the raw agent write fd."""

    def __init__(self, max_frame: int = 1 << 20) -> None:
        to_agent_r, to_agent_w = os.pipe()
        to_host_r, to_host_w = os.pipe()
        self.fds = [to_agent_r, to_agent_w, to_host_r, to_host_w]
        self.host = Channel(to_host_r, to_agent_w, AgentMessage, max_frame)
        self.agent = Channel(to_agent_r, to_host_w, HostMessage, max_frame)
        self.raw_to_host = to_host_w

    def close_agent(self) -> None:
        for fd in (self.fds[0], self.fds[3]):
            os.close(fd)
            self.fds.remove(fd)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def raw(pair: Pair, body: bytes) -> None:
    os.write(pair.raw_to_host, struct.pack(">I", len(body)) + body)


def decision(**fields: Any) -> dict[str, Any]:
    return {"t": "decision", "seq": 1, **fields}


def test_host_messages_round_trip(pair: Pair) -> None:
    start = Start(
        version=PROTOCOL_VERSION,
        symbols=["AAPL", "MSFT"],
        cash=100_000.0,
        commission=0.001,
        record_decisions=True,
        params={"fast": 10, "name": "x", "on": True, "ratio": 0.5, "none": None},
    )
    step = StepMsg(
        seq=7,
        ts=TS,
        bars={"AAPL": WireBar(1.0, 2.0, 0.5, 1.5, 1000.0)},
        cash=50_000.0,
        value=100_100.0,
        events=[WireEvent("3", "completed", -10.0, 1.25, 0.0125)],
        positions={"MSFT": WirePosition(-10.0, 1.25)},
    )
    for msg in (start, step, End()):
        pair.host.send(msg, timeout=1)
        assert pair.agent.recv(timeout=1) == msg


def test_agent_messages_round_trip(pair: Pair) -> None:
    full = Decision(
        seq=3,
        orders=[
            WireOrder("1", "AAPL", 10.0, "market"),
            WireOrder("2", "AAPL", -5.0, "stop_limit", 9.5, 9.0, TS),
        ],
        cancels=["0"],
        next_called=True,
        reasoning="because",
        confidence=0.5,
        indicators={"sma": 1.5, "bands": [1.0, None, 2.0], "warming": None},
        accesses=[Access("AAPL", "close", 0), Access("AAPL", "high", -1)],
        hook_errors=["get_decision_confidence raised ValueError"],
    )
    messages = [
        Ready(version=PROTOCOL_VERSION, strategy="S"),
        full,
        Failed(type="ValueError", message="boom", traceback="tb"),
        Done(),
    ]
    for msg in messages:
        pair.agent.send(msg, timeout=1)
        assert pair.host.recv(timeout=1) == msg


def test_frames_split_across_writes_are_reassembled(pair: Pair) -> None:
    body = msgspec.msgpack.encode(decision(reasoning="x" * 1000))
    frame = struct.pack(">I", len(body)) + body
    for i in range(0, len(frame), 7):
        os.write(pair.raw_to_host, frame[i : i + 7])
    msg = pair.host.recv(timeout=1)
    assert isinstance(msg, Decision)
    assert msg.reasoning == "x" * 1000


def test_large_frames_pass_through_a_full_pipe(pair: Pair) -> None:
    bars = {f"S{i:05d}": WireBar(1.0, 2.0, 0.5, 1.5, 100.0) for i in range(5000)}
    msg = StepMsg(seq=0, ts=TS, bars=bars, cash=1.0, value=1.0)
    assert len(msgspec.msgpack.encode(msg)) > 65536  # more than a pipe buffer holds
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.append(pair.agent.recv(timeout=5)))
    reader.start()
    pair.host.send(msg, timeout=5)
    reader.join()
    assert received == [msg]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xc1", "undecodable"),
        (msgspec.msgpack.encode(42), "invalid message"),
        (msgspec.msgpack.encode({"t": "bogus"}), "invalid message"),
        (msgspec.msgpack.encode({"t": "start", "version": 1}), "invalid message"),
        (msgspec.msgpack.encode(decision(extra=1)), "unknown field"),
        (msgspec.msgpack.encode(decision(seq="1")), "Expected `int`"),
        (msgspec.msgpack.encode(decision(reasoning="x" * (MAX_REASONING + 1))), "length"),
        (msgspec.msgpack.encode(decision(confidence=1.5)), "<= 1.0"),
        (msgspec.msgpack.encode(decision(confidence=float("nan"))), "confidence"),
        (
            msgspec.msgpack.encode(
                decision(orders=[{"id": "1", "symbol": "A", "size": 1.0, "type": "market"}] * 1001)
            ),
            "length",
        ),
        (
            msgspec.msgpack.encode(
                decision(orders=[{"id": "1", "symbol": "A", "size": 1.0, "type": "trailing"}])
            ),
            "type",
        ),
        (
            msgspec.msgpack.encode(
                decision(orders=[{"id": "x" * 65, "symbol": "A", "size": 1.0, "type": "market"}])
            ),
            "length",
        ),
        (
            msgspec.msgpack.encode(decision(accesses=[["A", "close", 0]] * (MAX_ACCESSES + 1))),
            "length",
        ),
        (msgspec.msgpack.encode(decision(accesses=[["A", "secret", 0]])), "enum value 'secret'"),
        (
            msgspec.msgpack.encode(
                decision(
                    orders=[
                        {
                            "id": "1",
                            "symbol": "A",
                            "size": 1.0,
                            "type": "limit",
                            "price": 1.0,
                            "valid_until": "2024-01-02T00:00:00",
                        }
                    ]
                )
            ),
            "timezone",
        ),
        (msgspec.msgpack.encode(decision(indicators={"x": "1.0"})), "indicators"),
        (msgspec.msgpack.encode(decision(indicators={"x": [0.0] * 17})), "indicators"),
        (msgspec.msgpack.encode({"t": "failed", "type": "E", "message": "m" * 5000}), "length"),
        (msgspec.msgpack.encode(b"\x80\x04\x95" + b"pickle"), "invalid message"),
    ],
    ids=[
        "not-msgpack",
        "not-an-object",
        "unknown-tag",
        "host-message",
        "unknown-field",
        "wrong-type",
        "long-reasoning",
        "confidence-above-1",
        "confidence-nan",
        "too-many-orders",
        "unknown-order-type",
        "long-order-id",
        "too-many-accesses",
        "unknown-field-name",
        "naive-valid-until",
        "indicator-string",
        "indicator-too-many-lines",
        "long-failure-message",
        "pickle-bytes",
    ],
)
def test_invalid_agent_messages_are_rejected(pair: Pair, body: bytes, match: str) -> None:
    raw(pair, body)
    with pytest.raises(ProtocolError, match=match):
        pair.host.recv(timeout=1)


def test_order_cap_matches_the_schema() -> None:
    orders = [WireOrder(str(i), "A", 1.0, "market") for i in range(MAX_ORDERS_PER_STEP)]
    body = msgspec.msgpack.encode(Decision(seq=0, orders=orders))
    assert len(msgspec.msgpack.Decoder(AgentMessage).decode(body).orders) == MAX_ORDERS_PER_STEP


def test_host_messages_are_not_accepted_from_the_agent(pair: Pair) -> None:
    raw(pair, msgspec.msgpack.encode(End()))
    with pytest.raises(ProtocolError, match="invalid message"):
        pair.host.recv(timeout=1)


def test_oversized_frame_is_rejected_before_reading_it() -> None:
    small = Pair(max_frame=100)
    try:
        os.write(small.raw_to_host, struct.pack(">I", 101))
        with pytest.raises(ProtocolError, match="exceeds the 100 limit"):
            small.host.recv(timeout=1)
    finally:
        small.close()


def test_timeout_and_closed_pipe(pair: Pair) -> None:
    with pytest.raises(ChannelTimeout):
        pair.host.recv(timeout=0.05)
    os.write(pair.raw_to_host, b"\x00\x00")  # half a header, then the agent goes away
    pair.close_agent()
    with pytest.raises(ChannelClosed):
        pair.host.recv(timeout=1)
    with pytest.raises(ChannelClosed):
        pair.host.send(End(), timeout=1)

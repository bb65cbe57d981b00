"""One paper session in the runtime: its agent, the simulated broker, its account and its sinks.

A :class:`LiveSession` wraps the :class:`~farm.engine.session.SessionEngine` that backtests run
too, with what paper trading adds: deterministic client order ids (``<session>-<step>-<n>``),
warm-up bars whose orders are never sent, a stop that cancels the open orders (and, with
``liquidate``, closes the positions at the next bar), and re-warming after a restart.

After a restart the agent is re-warmed on a scratch account (:meth:`LiveSession.replay`): it
re-decides the bars it had seen and gets their fills, so its own Backtrader state (orders,
trades, indicators) is what an uninterrupted run would hold when it is deterministic. Nothing of
it is sent: :meth:`LiveSession.restore` then swaps in the broker holding the persisted books.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from datetime import datetime

from farm.brokers.simulated import SimulatedBroker
from farm.core.account import Account
from farm.core.bars import Step
from farm.core.orders import OrderEvent, OrderRequest, OrderStatus, OrderType
from farm.engine.session import SessionEngine
from farm.sandbox.host import AgentSession, DecisionRecord


class ClientIds:
    """The session's broker as its agent sees it: orders get deterministic client order ids
    (``<session>-<step>-<n>``, n from 1 in the agent's order), events go back under the ids the
    agent chose (a :class:`~farm.brokers.base.Broker`)."""

    def __init__(self, broker: SimulatedBroker, session_id: str) -> None:
        self.broker = broker
        self.account: Account = broker.account
        self._session = session_id
        self._per_step: Counter[int] = Counter()
        self.to_client: dict[str, str] = {}
        self.to_agent: dict[str, str] = {}
        self.last_events: list[OrderEvent] = []
        #: Agent ids of orders the agent holds open that the broker does not (after a restart):
        #: the next step tells the agent they were cancelled.
        self.orphans: list[str] = []

    @property
    def open_orders(self) -> list[str]:
        """The agent's ids of the orders not yet done (those it knows)."""
        return [self.to_agent[c] for c in self.broker.open_orders if c in self.to_agent]

    def client_id(self, seq: int, n: int) -> str:
        """The client order id of the ``n``-th order decided at step ``seq``."""
        return f"{self._session}-{seq}-{n}"

    def submit(self, order: OrderRequest) -> None:
        self._per_step[order.decision_seq] += 1
        cid = self.client_id(order.decision_seq, self._per_step[order.decision_seq])
        self.to_client[order.client_order_id] = cid
        self.to_agent[cid] = order.client_order_id
        self.broker.submit(dataclasses.replace(order, client_order_id=cid))

    def cancel(self, client_order_id: str) -> None:
        cid = self.to_client.get(client_order_id)
        if cid is not None:
            self.broker.cancel(cid)

    def process(self, step: Step) -> list[OrderEvent]:
        self.last_events = self.broker.process(step)
        orphans, self.orphans = self.orphans, []
        return [
            OrderEvent(oid, OrderStatus.CANCELLED, step.ts, reason="not open after a restart")
            for oid in orphans
        ] + [
            dataclasses.replace(e, client_order_id=self.to_agent.get(e.client_order_id, ""))
            for e in self.last_events
        ]


class LiveSession:
    """A paper session's engine and what it owes the database after each step."""

    def __init__(
        self,
        session_id: str,
        agent_id: str,
        user_id: str,
        account_id: str,
        symbols: Sequence[str],
        agent: AgentSession,
        broker: SimulatedBroker,
        max_fills: int,
    ) -> None:
        self.id = session_id
        self.agent_id = agent_id
        self.user_id = user_id
        self.account_id = account_id
        self.symbols = tuple(symbols)
        self.agent = agent
        self.ids = ClientIds(broker, session_id)
        self.engine = SessionEngine(agent, self.ids, symbols, max_fills)
        self.live_bars = 0
        self.liquidating = False
        self.trades_saved = 0
        self.fills_saved = 0
        self.ranked_at = 0.0  # monotonic time of the last leaderboard update
        self.forward_saved = 0  # equity points sent to the forward record
        self.last_equity = 0.0  # the equity before the next forward bar
        self.backlog: deque[tuple[Step, float]] = deque()
        #: The step sent, when the feed published it and the deadline of its decision.
        self.inflight: tuple[Step, float, float] | None = None
        self._queued: datetime | None = None

    @property
    def account(self) -> Account:
        """The session's account (the host's truth)."""
        return self.ids.account

    def enqueue(self, step: Step, published: float) -> None:
        """Queue a feed step (published at monotonic time ``published``) if it is new to this
        session and holds a bar of its symbols: each bar is delivered once, in order."""
        last = self._queued or self.engine.last_ts
        if (last is None or step.ts > last) and any(s in step.bars for s in self.symbols):
            self.backlog.append((step, published))
            self._queued = step.ts

    def warm(self, steps: Sequence[Step], timeout: float) -> list[DecisionRecord]:
        """Stream warm-up bars to the agent; their orders are dropped. Returns the records."""
        records = []
        for step in steps:
            if self.engine.send(step, live=False):
                records.append(self.engine.receive(timeout))
        return records

    def replay(self, steps: Sequence[Step], timeout: float) -> list[DecisionRecord]:
        """Re-warm the agent on bars this session already traded (after a restart): it
        re-decides them against the scratch broker it was created with, which fills its orders
        as the bars come; nothing is sent or persisted. Returns the records."""
        records = []
        for step in steps:
            if self.engine.send(step):
                records.append(self.engine.receive(timeout))
                self.live_bars += 1
        return records

    def restore(
        self,
        broker: SimulatedBroker,
        persisted: Mapping[str, OrderRequest],
        records: Sequence[DecisionRecord],
    ) -> list[tuple[str, OrderRequest]]:
        """Trade on ``broker`` (the persisted books and open orders) from now on, in place of
        the scratch broker of :meth:`replay`.

        A persisted open order stays the agent's when the re-warm (``records``) decided the
        same order at the same step and still holds it open: its events reach the agent under
        its id. The agent is told at the next step that its other open orders were cancelled;
        persisted orders it does not hold are traded by the books alone. Returns the orders
        kept as the agent's, as (agent id, persisted order)."""
        scratch = self.ids
        still_open = set(scratch.broker.open_orders)
        ids = ClientIds(broker, self.id)
        kept = []
        for record in records:
            for order in record.orders:
                cid = scratch.to_client.get(order.client_order_id)
                mine = persisted.get(cid or "")
                if cid in still_open and mine is not None and same_order(order, mine):
                    ids.to_client[order.client_order_id] = mine.client_order_id
                    ids.to_agent[mine.client_order_id] = order.client_order_id
                    kept.append((order.client_order_id, mine))
        ids.orphans = [
            scratch.to_agent[c] for c in scratch.broker.open_orders if c not in ids.to_agent
        ]
        self.ids = ids
        self.engine.broker = ids
        return kept

    def settle(self, step: Step) -> None:
        """A step while liquidating: the broker fills the closing orders; the agent is done."""
        self.engine.last_ts = step.ts
        self.ids.process(step)
        self.account.mark(step)

    def liquidation_orders(self, ts: datetime) -> list[OrderRequest]:
        """Market orders closing every position, decided at the last bar ``ts``."""
        seq = self.engine.steps
        orders = []
        for n, (symbol, position) in enumerate(sorted(self.account.positions.items()), 1):
            orders.append(
                OrderRequest(
                    client_order_id=f"liquidate-{n}",
                    symbol=symbol,
                    size=-position.size,
                    type=OrderType.MARKET,
                    created_ts=ts,
                    created_price=self.account.closes[symbol],
                    decision_seq=seq,
                )
            )
        return orders


def same_order(a: OrderRequest, b: OrderRequest) -> bool:
    """Whether two requests ask for the same order (whatever their ids)."""
    return (a.symbol, a.size, a.type, a.price, a.limit_price, a.valid_until) == (
        b.symbol,
        b.size,
        b.type,
        b.price,
        b.limit_price,
        b.valid_until,
    )

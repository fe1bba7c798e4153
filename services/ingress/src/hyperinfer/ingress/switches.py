"""``quota.v1.QuotaPolicySwitched`` from the ingress, over an optional NATS connection.

Why NATS and not Redis: a switch to a failure policy happens exactly when this node
cannot reach Redis, so an event sent through Redis would be lost in the one case it
exists for. Why optional: the data plane's hot path needs only Redis, so NATS never
gates readiness — the ingress serves without it, connects in the background (retrying
with backoff, one log line per outage), and holds up to ``max_pending`` switches meanwhile
(the oldest are dropped first, counted). Each switch is also a log line and a counter
(``hyperinfer_quota_policy_switches_total``) whatever happens to NATS.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from hyperinfer.client.lifecycle import raise_if_cancelled, stop_task
from hyperinfer.client.quota import PolicySwitch
from hyperinfer.contracts import names
from hyperinfer.contracts.quota import v1 as quota_v1
from hyperinfer.runtime import NatsConnection
from hyperinfer.runtime.bus import Bus
from hyperinfer.runtime.errors import DependencyUnavailable

log = logging.getLogger(__name__)


class SwitchPublisher:
    """Queue switches (sync, from the limiter's listeners) and publish them when it can."""

    def __init__(
        self,
        nats: NatsConnection,
        *,
        max_pending: int = 256,
        connect_timeout_s: float = 2.0,
        retry_max_s: float = 30.0,
    ) -> None:
        self._nats = nats
        self._bus = Bus(nats, source="ingress")
        self._pending: collections.deque[PolicySwitch] = collections.deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._connect_timeout_s = connect_timeout_s
        self._retry_max_s = retry_max_s
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.published = 0
        self.dropped = 0

    def on_switch(self, switch: PolicySwitch) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(switch)
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="switches")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self.connected:
            await self._nats.close()

    def status(self) -> dict[str, object]:
        return {
            "nats": "connected" if self.connected else "unavailable",
            "published": self.published,
            "queued": len(self._pending),
            "dropped": self.dropped,
        }

    async def _run(self) -> None:
        await self._connect()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                switch = self._pending[0]
                try:
                    await self._publish(switch)
                except Exception as exc:  # NATS buffers while reconnecting; this is worse
                    raise_if_cancelled()
                    log.warning("policy switch not published yet: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                self._pending.popleft()
                self.published += 1

    async def _connect(self) -> None:
        delay, warned = 0.5, False
        while True:
            try:
                await self._nats.connect(self._connect_timeout_s)
            except DependencyUnavailable as exc:
                if not warned:
                    log.warning("%s; policy switches wait for it (serving goes on)", exc)
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            self.connected = True
            if warned:
                log.info("NATS reached; publishing policy switches")
            return

    async def _publish(self, switch: PolicySwitch) -> None:
        event = quota_v1.QuotaPolicySwitched(
            node=switch.node, team_id=switch.team_id, mode=switch.mode, reason=switch.reason
        )
        await self._bus.publish(
            names.QUOTA_POLICY_SWITCHED,
            quota_v1.EVENT_POLICY_SWITCHED,
            event,
            tenant=switch.team_id,
        )

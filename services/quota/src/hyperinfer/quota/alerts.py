"""Publish budget alerts from the outbox: NATS events, and a quota.alert job.

``threshold_crossed`` / ``exhausted`` go to ``hyperinfer.quota.v1.*`` (core NATS);
the same alert goes to the event pipeline as a HIGH priority ``quota.alert`` job on
JetStream with ``Nats-Msg-Id`` = the alert's id, so a retry is deduplicated. An
alert is marked per channel once sent; unsent ones are retried until
``max_age_s``. Each alert row exists once per budget, period, kind and threshold,
so each is published once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hyperinfer.contracts import Priority, names, utc_now
from hyperinfer.contracts.jobs import v1 as jobs_v1
from hyperinfer.contracts.quota import v1 as quota_v1
from hyperinfer.quota.domain import Alert
from hyperinfer.quota.metrics import ServiceMetrics
from hyperinfer.quota.ports import SpendStore, StoredAlert
from hyperinfer.runtime import get_logger
from hyperinfer.runtime.bus import Bus, encode
from nats.js import JetStreamContext
from pydantic import BaseModel

log = get_logger(__name__)
JOB_SUBJECT = names.job_subject(Priority.HIGH, jobs_v1.TYPE_QUOTA_ALERT)


def alert_event(alert: Alert) -> tuple[str, str, BaseModel]:
    """``(subject, type, data)`` of the NATS event for ``alert``."""
    key = alert.key
    common: dict[str, Any] = {
        "scope": key.scope,
        "subject_id": key.subject_id,
        "team_id": key.team_id,
        "period": key.period,
        "period_start": key.period_start,
        "spent_micros": alert.spent,
        "limit_micros": alert.limit,
    }
    if alert.kind == "exhausted":
        data: BaseModel = quota_v1.QuotaExhausted(**common, hard=alert.hard)
        return names.QUOTA_EXHAUSTED, quota_v1.EVENT_EXHAUSTED, data
    data = quota_v1.QuotaThresholdCrossed(**common, threshold_pct=alert.threshold_pct)
    return names.QUOTA_THRESHOLD_CROSSED, quota_v1.EVENT_THRESHOLD_CROSSED, data


def alert_job(alert: Alert) -> jobs_v1.QuotaAlert:
    return jobs_v1.QuotaAlert(
        team_id=alert.key.team_id,
        kind="exhausted" if alert.kind == "exhausted" else "threshold_crossed",
        threshold_pct=alert.threshold_pct or None,
        spent_micros=alert.spent,
        limit_micros=alert.limit,
    )


class AlertPublisher:
    """Drains the alert outbox to NATS (and to JetStream unless ``jetstream`` is None)."""

    def __init__(
        self,
        store: SpendStore,
        bus: Bus,
        metrics: ServiceMetrics,
        *,
        jetstream: Callable[[], JetStreamContext] | None = None,
        max_age_s: float = 3600.0,
    ) -> None:
        self._store = store
        self._bus = bus
        self._metrics = metrics
        self._jetstream = jetstream
        self._max_age = timedelta(seconds=max_age_s)
        self._warned: set[int] = set()

    async def flush(self) -> int:
        """Publish what is not yet published; returns how many alerts were handled."""
        pending = await self._store.unpublished_alerts(100, utc_now() - self._max_age)
        sent, jobs = [], []
        for stored in pending:
            if not stored.published and await self._publish_event(stored):
                sent.append(stored.id)
            if not stored.job_published and await self._publish_job(stored):
                jobs.append(stored.id)
        if sent or jobs:
            await self._store.mark_alerts(sent, jobs)
        return len(pending)

    async def _publish_event(self, stored: StoredAlert) -> bool:
        subject, type_, data = alert_event(stored.alert)
        try:
            await self._bus.publish(
                subject, type_, data, tenant=stored.alert.key.team_id, priority=Priority.HIGH
            )
        except Exception as exc:
            self._warn(stored, f"event not published: {type(exc).__name__}: {exc}")
            return False
        self._metrics.alerts.labels(stored.alert.kind).inc()
        log.info(
            "quota alert published",
            extra={
                "team_id": stored.alert.key.team_id,
                "kind": stored.alert.kind,
                "subject_id": stored.alert.key.subject_id,
                "pct": stored.alert.threshold_pct,
            },
        )
        return True

    async def _publish_job(self, stored: StoredAlert) -> bool:
        if self._jetstream is None:  # jobs switched off
            return True
        env = self._bus.envelope(
            jobs_v1.TYPE_QUOTA_ALERT,
            alert_job(stored.alert),
            tenant=stored.alert.key.team_id,
            priority=Priority.HIGH,
        )
        headers = {"Nats-Msg-Id": f"quota-alert-{stored.id}", "Hyperinfer-Type": env.type}
        try:
            await self._jetstream().publish(JOB_SUBJECT, encode(env), timeout=2, headers=headers)
        except Exception as exc:
            self._warn(stored, f"job not published: {type(exc).__name__}: {exc}")
            return False
        return True

    def _warn(self, stored: StoredAlert, why: str) -> None:
        if stored.id not in self._warned:  # one line per alert, not per retry
            self._warned.add(stored.id)
            log.warning("quota alert %d %s; will retry", stored.id, why)

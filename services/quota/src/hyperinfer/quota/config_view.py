"""The quota view of the config snapshot: a ``QuotaIndex`` rebuilt on every change."""

from __future__ import annotations

from collections.abc import Callable

from hyperinfer.client.quota import QuotaIndex
from hyperinfer.contracts.config.v1 import ConfigSnapshot


class QuotaConfigView:
    """Holds the index of the newest snapshot; tells listeners when it changed."""

    def __init__(self, snapshot: ConfigSnapshot) -> None:
        self.index = QuotaIndex.from_snapshot(snapshot)
        self._listeners: list[Callable[[QuotaIndex], None]] = []

    def current(self) -> QuotaIndex:
        return self.index

    def on_change(self, listener: Callable[[QuotaIndex], None]) -> None:
        self._listeners.append(listener)

    def apply(self, snapshot: ConfigSnapshot) -> None:
        """The ``ConfigAgent.on_change`` callback."""
        self.index = QuotaIndex.from_snapshot(snapshot)
        for listener in self._listeners:
            listener(self.index)

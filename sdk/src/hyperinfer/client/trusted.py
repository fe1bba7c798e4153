"""Acting for an API key by its id: the entry point of trusted internal callers.

The ingress and the thick client authenticate a caller by the key's plaintext. A
trusted internal service — the event pipeline running an asynchronous chat job — holds
only the key's id and team, recorded by whoever accepted the job; it never sees nor
stores a plaintext key. ``TrustedCallers`` turns (key id, team id) into the very
``Caller`` the plaintext would have given, from the same config snapshot:

- the key must still be in the snapshot (revoked, suspended and expired keys are left
  out of it by the config service) and not expired now → else ``AuthenticationFailed``;
- it must belong to the team the job names → else ``AuthenticationFailed``;
- no snapshot loaded yet → ``NotReady`` (retry later).

Everything after authentication is the ordinary ``DataPlane`` path: scopes, aliases,
one quota reservation, upstream call, settle and usage event, with the plane's
``DataPlaneOptions.origin`` (``"pipeline"`` for the event pipeline)::

    plane = DataPlane(..., options=DataPlaneOptions(origin="pipeline"))
    callers = TrustedCallers(plane)
    outcome = await plane.chat(callers.caller(job.api_key_id, job.team_id), job.request)

Trust: whoever can hand a (key id, team id) pair to this entry point spends that key's
quota. Expose it only behind an internal boundary (the pipeline's ``X-Internal-Key`` and
its job queues), never to end users.
"""

from __future__ import annotations

import time

from hyperinfer.client.dataplane import DataPlane
from hyperinfer.client.errors import AuthenticationFailed, NotReady
from hyperinfer.client.governance import Caller, _caller


class TrustedCallers:
    """Callers by key id, rebuilt once per config snapshot version (a dict lookup each)."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self._version = -1
        self._by_id: dict[str, Caller] = {}

    def caller(self, key_id: str, team_id: str) -> Caller:
        """The caller of an active key of ``team_id``; raises like a bad plaintext would."""
        snapshot = self._plane.config.snapshot
        if snapshot.version == 0:
            raise NotReady("This node has not loaded its configuration yet; retry shortly.")
        if snapshot.version != self._version:
            self._by_id = {k.id: _caller(k) for k in snapshot.keys.values() if k.active}
            self._version = snapshot.version
        found = self._by_id.get(key_id)
        if found is None or found.team_id != team_id:
            raise AuthenticationFailed(
                f"API key {key_id} of team {team_id} is unknown, revoked or suspended.",
                code="api_key_revoked",
            )
        if found.expires_at is not None and time.time() >= found.expires_at:
            raise AuthenticationFailed(f"API key {key_id} expired.", code="api_key_expired")
        return found

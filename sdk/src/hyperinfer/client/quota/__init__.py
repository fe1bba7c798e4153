"""Exact distributed rate limits and budgets: the data plane's quota check.

One EVALSHA per request reserves RPM (GCRA), TPM (GCRA sized by the token estimate)
and budget (integer micro-units) for an API key and its team, atomically, on Redis
server time; ``settle_into`` refunds the difference after the response on the
pipeline that carries the usage event. See ``docs/quota.md``.

::

    index = QuotaIndex.from_snapshot(agent.snapshot)          # once per snapshot
    limiter = QuotaLimiter(redis, node_id="ingress-1")
    await limiter.start()                                     # heartbeat (replica count)
    res = await limiter.reserve(request_id=rid, team_id=t, key_id=k, tokens=n,
                                cost_micros=c, limits=index.limits(t, k))
    ...
    pipe = redis.pipeline(transaction=False)
    limiter.settle_into(pipe, res, actual_tokens, actual_cost)
    pipe.xadd(names.USAGE_STREAM, {names.USAGE_STREAM_FIELD: envelope_json})
    await pipe.execute()
"""

from hyperinfer.client.quota._index import (
    BudgetRule,
    Limits,
    QuotaIndex,
    budget_rule,
    gcra_params,
)
from hyperinfer.client.quota._keys import (
    budget_base,
    budget_key,
    pending_key,
    ready_key,
    reservation_key,
    rpm_key,
    tpm_key,
)
from hyperinfer.client.quota._limiter import (
    UNAVAILABLE_ERRORS,
    QuotaExceeded,
    QuotaLimiter,
    Reservation,
    go_duration,
    hot_path_redis,
    limit_headers,
)
from hyperinfer.client.quota._local import LocalLimiter
from hyperinfer.client.quota._metrics import Histogram, PolicySwitch, QuotaMetrics
from hyperinfer.client.quota._periods import period_bounds, period_id, to_us
from hyperinfer.client.quota._scripts import source as script_source

__all__ = [
    "UNAVAILABLE_ERRORS",
    "BudgetRule",
    "Histogram",
    "Limits",
    "LocalLimiter",
    "PolicySwitch",
    "QuotaExceeded",
    "QuotaIndex",
    "QuotaLimiter",
    "QuotaMetrics",
    "Reservation",
    "budget_base",
    "budget_key",
    "budget_rule",
    "gcra_params",
    "go_duration",
    "hot_path_redis",
    "limit_headers",
    "pending_key",
    "period_bounds",
    "period_id",
    "ready_key",
    "reservation_key",
    "rpm_key",
    "script_source",
    "to_us",
    "tpm_key",
]

"""The floor of any Python proxy here (helper of ``bench/dataplane.py``).

A bare ASGI app on the same server stack as the ingress (uvicorn, httptools, uvloop,
pinned to the proxy core) that does only what cannot be avoided: read the body, make
ONE Redis round trip (``PING``, with ``--redis``; the quota reserve is one EVALSHA),
forward the body to the upstream over the same HTTP/1.1 client as the ingress
(``Http1Pool``), and return the answer. No auth, routing, quota logic, usage or metrics.

The ingress's added latency minus this proxy's is what HyperInfer's governance costs;
this proxy's added latency is what the topology costs (three round trips between cores
instead of none for the direct path).

    python bench/dataplane_floor.py --port P --upstream http://127.0.0.1:U/v1 [--redis URL]
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from hyperinfer.client.providers.http1 import Http1Pool
from hyperinfer.client.resp import RespClient

JSON = {"content-type": "application/json"}


class FloorProxy:
    def __init__(self, upstream: str, redis_url: str | None) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.redis = RespClient(redis_url) if redis_url else None
        self.pool = Http1Pool()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if self.redis is not None:
            await self.redis.execute(b"PING")
        status, _, body = await self.pool.post(self.url, b"".join(parts), JSON, 30)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream API root, .../v1")
    parser.add_argument("--redis", default=None, help="one PING per request when given")
    args = parser.parse_args()
    uvicorn.run(
        FloorProxy(args.upstream, args.redis),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()

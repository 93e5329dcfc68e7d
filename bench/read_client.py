"""A separate client process for ``bench read``: times cache hits of ``get_user_metrics`` as a web app would see
them, away from the engine's threads in the bench process. Every read must be a hit (a miss would need ClickHouse,
which this process does not open): a miss fails the run.

``python -m bench.read_client REDIS_URL BATCHES_JSON N`` prints the N latencies in ms as JSON.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime

from app.core.metrics import UserMetrics
from app.core.settings import Settings
from app.read.metrics_service import UserMetricsQueryService
from app.stores.runtime import Runtime


def _no_misses(user_ids: Sequence[int], as_of: datetime | None = None) -> dict[int, UserMetrics]:
    raise RuntimeError(f"a miss in the hit benchmark ({len(user_ids)} users): the batches were not all cached")


def main(argv: list[str]) -> None:
    url, batches, n = argv[0], json.loads(argv[1]), int(argv[2])
    service = UserMetricsQueryService(Runtime(Settings(REDIS_URL=url)), source=_no_misses)
    for i in range(min(20, n)):  # warm-up: connections, code paths
        service.get_user_metrics(batches[i % len(batches)])
    gc.collect()
    out = []
    for i in range(n):
        started = time.perf_counter()
        service.get_user_metrics(batches[i % len(batches)])
        out.append((time.perf_counter() - started) * 1000)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])

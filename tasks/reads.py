"""Read tasks: let other processes reach ClickHouse through the worker that owns it (embedded mode)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app import constants as c
from app import migrations, runtime
from app.locks import redis_lock
from app.query import direct_source
from app.reactions import latest_reactions
from tasks.base import project_task


@project_task(c.QUERY_USER_METRICS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_user_metrics(self: Any, user_ids: list[int], as_of: str | None = None) -> dict[str, Any]:
    """Compute metrics from ClickHouse (no cache) and return them as ``{userId: hash fields}``."""
    when = datetime.fromisoformat(as_of) if as_of else None
    computed = direct_source(runtime.get())([int(u) for u in user_ids], when)
    return {str(uid): m.to_hash() for uid, m in computed.items()}


@project_task(c.QUERY_REACTIONS, ignore_result=False, max_retries=0, time_limit_s=30)
def query_reactions(self: Any, user_id: int, image_ids: list[int]) -> dict[str, list[list[Any]]]:
    """Latest reaction bits of a user on images, from ClickHouse: ``{imageId: [[bit, on, version], ...]}``."""
    states = latest_reactions(runtime.get().clickhouse, int(user_id), [int(i) for i in image_ids])
    return {str(image): [[u.bit, u.on, u.version] for u in bits] for image, bits in states.items()}


@project_task(c.APPLY_MIGRATIONS, ignore_result=False, max_retries=0, time_limit_s=300)
def apply_migrations(self: Any) -> list[int]:
    rt = runtime.get()
    with redis_lock(rt.redis, "migrate", timeout_s=300):
        return migrations.migrate(rt.clickhouse)

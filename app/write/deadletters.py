"""The dead-letter store: every message the worker could not process, with its reason and payload.

A Redis stream (``deadletters``), capped and with a long TTL renewed on every write, so nothing disappears
silently and the operator can list, replay (through the same validation as new messages) or purge entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from app.core import constants as c
from app.stores import counters
from app.stores.redis_store import RedisClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    task: str
    reason: str
    error: str
    task_id: str
    kwargs: Any
    at_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.entry_id,
            "task": self.task,
            "reason": self.reason,
            "error": self.error,
            "task_id": self.task_id,
            "kwargs": self.kwargs,
            "at_ms": self.at_ms,
        }


def capped_body(kwargs: Any, limit: int = c.DEAD_LETTER_MAX_BODY_BYTES) -> str:
    """``kwargs`` as JSON; past ``limit`` bytes, its head with the full size and SHA-256 (a 20 MB hostile message
    must not become a 20 MB stream entry)."""
    try:
        body = json.dumps(kwargs, default=str)
    except (TypeError, ValueError):
        body = json.dumps(repr(kwargs))
    raw = body.encode()
    if len(raw) <= limit:
        return body
    head = raw[:limit].decode("utf-8", "ignore")
    return json.dumps(
        {"truncated": True, "size_bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "head": head}
    )


def _clip(text: str, limit: int = c.DEAD_LETTER_MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def record(r: RedisClient, *, task: str, reason: str, error: str, task_id: str, kwargs: Any) -> str:
    """Store one dead letter; returns its id. Logged too (clipped), so a Redis outage still leaves a trace."""
    body = capped_body(kwargs)
    task, reason, task_id = _clip(task, 200), _clip(reason), _clip(task_id, 200)
    log.error(
        "dead letter: task=%s id=%s error=%s reason=%s payload=%s", task, task_id, error, reason, _clip(body, 2000)
    )
    pipe = r.pipeline(transaction=False)
    pipe.xadd(
        c.DEAD_LETTER_KEY,
        {
            "task": task,
            "reason": reason,
            "error": error,
            "task_id": task_id,
            "kwargs": body,
            "at_ms": str(int(time.time() * 1000)),
        },
        maxlen=c.DEAD_LETTER_MAXLEN,
        approximate=True,
    )
    pipe.expire(c.DEAD_LETTER_KEY, c.DEAD_LETTER_TTL_S)
    counters.add(pipe, dead_letters_total=1)
    entry_id, *_ = pipe.execute()
    return str(entry_id)


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as a decode_responses client returns them."""
    return cast(list[tuple[str, dict[str, str]]], reply or [])


def _parse(entry_id: str, fields: dict[str, str]) -> DeadLetter:
    try:
        kwargs = json.loads(fields.get("kwargs", "null"))
    except ValueError:
        kwargs = fields.get("kwargs")
    return DeadLetter(
        entry_id=entry_id,
        task=fields.get("task", ""),
        reason=fields.get("reason", ""),
        error=fields.get("error", ""),
        task_id=fields.get("task_id", ""),
        kwargs=kwargs,
        at_ms=int(fields.get("at_ms", "0")),
    )


def list_letters(r: RedisClient, limit: int = 100) -> list[DeadLetter]:
    return [_parse(eid, fields) for eid, fields in _entries(r.xrange(c.DEAD_LETTER_KEY, count=limit))]


def get(r: RedisClient, entry_ids: list[str]) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    for eid in entry_ids:
        found = _entries(r.xrange(c.DEAD_LETTER_KEY, min=eid, max=eid))
        out.extend(_parse(i, f) for i, f in found)
    return out


def count(r: RedisClient) -> int:
    return int(r.xlen(c.DEAD_LETTER_KEY))


def delete(r: RedisClient, entry_ids: list[str]) -> int:
    return int(r.xdel(c.DEAD_LETTER_KEY, *entry_ids)) if entry_ids else 0


def purge_all(r: RedisClient) -> int:
    n = count(r)
    r.delete(c.DEAD_LETTER_KEY)
    return n

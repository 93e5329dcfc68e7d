"""Replaying dead letters once their cause is fixed.

Two kinds are replayable: a task message (``record_follow`` and the other event tasks) goes through the producer
again, with its validation, so a still-invalid one is refused and kept; validated events the flusher could not write
(``BUFFERED_EVENTS_TASK``) go back into the event buffer as they were, where the event-id and owner checks see them
again. A replayed letter is deleted; a refused one stays with the reason printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.client import EventProducer
from app.core import constants as c
from app.core.events import Event
from app.stores.redis_store import RedisClient
from app.write import buffer, deadletters


@dataclass
class ReplayResult:
    replayed: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (dead-letter id, why)


def replay(r: RedisClient, producer: EventProducer, ids: list[str] | None = None) -> ReplayResult:
    """Replay the dead letters ``ids`` (all when None)."""
    letters = deadletters.get(r, ids) if ids else deadletters.list_letters(r, 100_000)
    result = ReplayResult()
    for letter in letters:
        try:
            if letter.task == c.BUFFERED_EVENTS_TASK and isinstance(letter.kwargs, dict):
                events = [Event.from_json(item) for item in letter.kwargs["events"]]
                buffer.append(r, str(letter.kwargs.get("source_task", "")), events)
            elif letter.task in c.EVENT_TASKS and isinstance(letter.kwargs, dict):
                producer.send(letter.task, **letter.kwargs)
            else:
                raise ValueError(f"not a replayable event task message ({letter.task or 'no task name'})")
        except (ValueError, TypeError, KeyError) as exc:
            result.refused.append((letter.entry_id, str(exc)))
            continue
        deadletters.delete(r, [letter.entry_id])
        result.replayed += 1
    return result

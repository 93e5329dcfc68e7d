"""The flusher: drains the event buffer into ClickHouse in batches and refreshes the affected caches.

Batching is adaptive: once the first entry arrives the flusher lingers ``FLUSH_LINGER_MS`` and then takes what
is waiting, up to about ``FLUSH_MAX_EVENTS`` events, so a busy buffer gives big inserts and a trickle gives one
insert per linger instead of one per event. An insert costs about the same whatever its size, so throughput grows
with load instead of capping at the rate of single inserts.

Order of effects per cycle: insert events, merge reaction caches, mark the affected users for the refresher,
acknowledge the stream entries. A crash anywhere before the acknowledgement replays the cycle, which is harmless
(queries are idempotent in ``eventId``; cache writes are whole-hash and versioned).

Taking turns (server mode, where every worker process runs a flusher on the one buffer): a cycle whose batch is
not full runs under a short lease in Redis (``lock:flush-turn``), so such cycles run one at a time across the
processes. Without it, N flushers each linger on their share of a trickle and the stack makes N times the
inserts, each paying every view's fixed cost, for the same events. A full batch (a backlog, ``record_events``)
hands the turn on before its insert, so flushers write big batches side by side. The lease is an economy, never
a guard: queries and cache writes are correct with any number of flushers at once, so a lease that runs out (a
killed holder, an insert slower than the lease) only lets another flusher start early.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from app.caches import reactions_cache
from app.core import constants as c
from app.core import failpoints
from app.core.backoff import jittered_delay
from app.core.errors import PermanentError
from app.core.events import Event
from app.stores import counters as service_counters
from app.stores.clickhouse import insert_events
from app.stores.errors import REDIS_DOWN, classify
from app.stores.runtime import Runtime
from app.write import buffer, deadletters, event_ids, owners
from app.write.buffer import Entry
from app.write.refresher import mark_dirty

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 30.0
RECLAIM_EVERY_S = 15.0
READ_STEP = 50  # stream entries per read while a batch is assembled
TURN_LEASE_S = 1.0  # the turn outlives a normal cycle; a killed holder delays the others by at most this
TURN_POLL_S = 0.01  # how often a waiting flusher asks for the turn
TURN_STEP_BACK_S = 0.015  # after a cycle that wrote, a flusher waits this long so a waiting one gets the turn


@dataclass
class FlushResult:
    entries: int = 0
    events: int = 0
    users_marked: int = 0  # users with a cached hash (or a fill under way), queued for the refresher


class Flusher:
    def __init__(
        self,
        rt: Runtime,
        consumer: str,
        on_marked: Callable[[], object] = lambda: None,
        take_turns: bool | None = None,
    ) -> None:
        self.rt = rt
        self.consumer = consumer
        self.on_marked = on_marked  # this process's refresher's wake: marked users are recomputed at once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recover = True  # first read our own pending entries (left by a crash or a failed cycle)
        self._last_reclaim = 0.0
        # Turns by default on a server; an embedded engine has one flusher, its owner's, with no one to take turns.
        self._turn: Lock | None = None
        if take_turns is None:
            take_turns = not rt.settings.clickhouse_embedded
        if take_turns:
            self._turn = Lock(rt.redis, c.LOCK_KEY.format(name="flush-turn"), timeout=TURN_LEASE_S, sleep=TURN_POLL_S)

    # One cycle -----------------------------------------------------------------------------------------------
    def _take(self, block_ms: int) -> list[Entry]:
        """The next batch: own pending entries first, then stale ones of dead consumers, then new ones.

        Entries hold a whole message (one event, or hundreds from ``record_events``), so a batch is read in
        small steps until it holds about ``FLUSH_MAX_EVENTS`` events.
        """
        r = self.rt.redis
        if self._recover:
            entries = self._give_up_on_exhausted(buffer.read(r, self.consumer, READ_STEP, None, own_pending=True))
            if entries:
                return entries
            self._recover = False
        now = time.monotonic()
        if now - self._last_reclaim > RECLAIM_EVERY_S:
            self._last_reclaim = now
            claimed = buffer.claim_stale(r, self.consumer, self.rt.settings.reclaim_idle_ms, READ_STEP)
            if claimed:
                log.warning("claimed %d stale buffer entries from dead consumers", len(claimed))
                return claimed
        entries = buffer.read(r, self.consumer, READ_STEP, block_ms)
        if not entries:
            return entries
        linger = self.rt.settings.flush_linger_ms
        if linger:
            # A short linger after the first entry turns a trickle into one insert instead of many small ones.
            self._stop.wait(linger / 1000)
        budget = self.rt.settings.flush_max_events
        events = sum(len(e.events) for e in entries)
        while events < budget:
            more = buffer.read(r, self.consumer, READ_STEP, None)
            entries += more
            events += sum(len(e.events) for e in more)
            if len(more) < READ_STEP:
                break
        return entries

    def flush_once(self, block_ms: int | None = None) -> FlushResult:
        """Run one cycle; raises on failure, leaving the entries pending for the next try."""
        wait = self.rt.settings.flush_max_wait_ms if block_ms is None else block_ms
        if self._turn is not None and not self._turn.acquire(blocking_timeout=max(wait, 1) / 1000):
            return FlushResult()  # another flusher's cycle is under way; it takes what is waiting
        try:
            return self._cycle(wait)
        finally:
            self._hand_on_turn()

    def _hand_on_turn(self) -> None:
        if self._turn is not None:
            # Not held (handed on already, before a full batch's insert) or the lease ran out: nothing to hand on.
            with contextlib.suppress(LockError):
                self._turn.release()

    def _cycle(self, wait: int) -> FlushResult:
        entries = self._take(wait)
        if not entries:
            return FlushResult()
        if sum(len(e.events) for e in entries) >= self.rt.settings.flush_max_events:
            self._hand_on_turn()  # a full batch: the next flusher may take another one and insert beside us
        try:
            return self._write(entries)
        except Exception as exc:
            self._recover = True
            if classify(exc) is PermanentError:
                # Data ClickHouse refused: find the entries that carry it; the others are written.
                return self._write_one_by_one(entries)
            # Capacity, timeout or availability: the whole batch stays pending and is tried again after a backoff
            # (``run``); after FLUSH_MAX_DELIVERIES attempts its entries become replayable dead letters.
            self._count(flush_failures_total=1)
            raise

    def _count(self, **counters: int) -> None:
        """Add to the service counters (``stats:counters``); a Redis outage only loses the count."""
        with contextlib.suppress(*REDIS_DOWN):
            service_counters.add(self.rt.redis, **counters)

    def _without_reused_ids(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter the events that reuse a taken event id with another payload (first wins); keep the rest."""
        flat = [e for entry in entries for e in entry.events]
        losers = event_ids.conflicts(self.rt.clickhouse, flat)
        if not losers:
            return entries
        by_event = {id(flat[pos]): reason for pos, reason in losers.items()}
        return self._split_off(entries, lambda e: by_event.get(id(e)), "EventIdReused")

    def _write(self, entries: list[Entry]) -> FlushResult:
        r, ch = self.rt.redis, self.rt.clickhouse
        entries = self._without_reused_ids(entries)
        resolution = owners.resolve(ch, [e for entry in entries for e in entry.events])
        if resolution.conflicts:
            entries = self._dead_letter_conflicts(entries, resolution.conflicts)
        keep = {str(e.event_id) for entry in entries for e in entry.events}
        events = [e for e in resolution.events if str(e.event_id) in keep]
        failpoints.hit(failpoints.FLUSH_BEFORE_INSERT)
        insert_events(ch, events + resolution.adopted)
        # Several flushers (server mode: one per worker process) look again after their insert; an embedded engine
        # has exactly one flusher (its owner process), so nothing can interleave and the two queries are skipped.
        late = [] if self.rt.settings.clickhouse_embedded else owners.adopt_after_insert(ch, events)
        if late:
            insert_events(ch, late)
        users = {u for e in (*events, *resolution.adopted, *late) for u in e.affected_users()}
        reactions_cache.merge(r, reactions_cache.updates_from_events(events))
        marked = mark_dirty(r, users)  # the refresher recomputes their cached hashes
        if marked:
            self.on_marked()
        buffer.ack(r, [entry.entry_id for entry in entries])
        self._count(messages_ingested_total=len(entries), events_ingested_total=len(events), flushes_total=1)
        return FlushResult(len(entries), len(events), marked)

    def _give_up_on_exhausted(self, entries: list[Entry]) -> list[Entry]:
        """Entries that failed ``FLUSH_MAX_DELIVERIES`` times go to the dead letters (replayable), not round again."""
        limit = self.rt.settings.flush_max_deliveries
        counts = buffer.delivery_counts(self.rt.redis, self.consumer, [e.entry_id for e in entries])
        keep = []
        for entry in entries:
            tries = counts.get(entry.entry_id, 0)
            if tries > limit:
                self._dead_letter(entry, f"not written after {tries - 1} attempts (ClickHouse unreachable?)", "GaveUp")
            else:
                keep.append(entry)
        return keep

    def _dead_letter_conflicts(self, entries: list[Entry], conflicts: dict[str, str]) -> list[Entry]:
        """Dead-letter the events that carry wrong owner data (all four of a ``set_reaction`` conflict together);
        keep the rest of their messages: one bad item does not sink a 500-event ``record_events``."""
        return self._split_off(entries, lambda e: conflicts.get(str(e.event_id)), "OwnerConflict")

    def _split_off(self, entries: list[Entry], reason_of: Callable[[Event], str | None], error: str) -> list[Entry]:
        """Entries without the events ``reason_of`` refuses; those go to one dead letter per entry (not acknowledged
        here: the entry is acknowledged with the batch, after its other events are written)."""
        out = []
        for entry in entries:
            refused = [(e, reason) for e in entry.events if (reason := reason_of(e)) is not None]
            if not refused:
                out.append(entry)
                continue
            deadletters.record(
                self.rt.redis,
                task=c.BUFFERED_EVENTS_TASK,
                reason="; ".join(dict.fromkeys(reason for _, reason in refused)),
                error=error,
                task_id=entry.entry_id,
                kwargs={"source_task": entry.task, "events": [e.to_json() for e, _ in refused]},
            )
            bad = {id(e) for e, _ in refused}
            out.append(Entry(entry.entry_id, entry.task, [e for e in entry.events if id(e) not in bad]))
        return out

    def _dead_letter(self, entry: Entry, reason: str, error: str) -> None:
        deadletters.record(
            self.rt.redis,
            task=c.BUFFERED_EVENTS_TASK,
            reason=reason,
            error=error,
            task_id=entry.entry_id,
            kwargs={"source_task": entry.task, "events": [e.to_json() for e in entry.events]},
        )
        buffer.ack(self.rt.redis, [entry.entry_id])

    def _write_one_by_one(self, entries: list[Entry]) -> FlushResult:
        """A batch hit a permanent error: isolate the bad entries, dead-letter them, write the rest."""
        total = FlushResult()
        for entry in entries:
            try:
                result = self._write([entry])
            except Exception as exc:
                if classify(exc) is not PermanentError:
                    raise
                self._dead_letter(entry, f"ClickHouse refused the events: {exc}", type(exc).__name__)
                continue
            total.entries += result.entries
            total.events += result.events
            total.users_marked += result.users_marked
        self._recover = False
        return total

    # Thread ----------------------------------------------------------------------------------------------------
    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if failures == 0 and self._recover:
                    buffer.ensure_group(self.rt.redis)
                result = self.flush_once()
                failures = 0
                if result.entries:
                    log.debug("flushed %d events from %d entries", result.events, result.entries)
                    if self._turn is not None:
                        self._stop.wait(TURN_STEP_BACK_S)  # let a waiting flusher have the next turn
            except Exception as exc:
                if isinstance(exc, redis.ResponseError) and ("NOGROUP" in str(exc) or "UNBLOCKED" in str(exc)):
                    # The stream or its group vanished (FLUSHALL, a new Redis): recreate it and carry on.
                    log.warning("event buffer group missing; recreating it")
                    with contextlib.suppress(Exception):
                        buffer.ensure_group(self.rt.redis)
                    self._stop.wait(0.1)
                    continue
                failures += 1
                delay = jittered_delay(failures, BACKOFF_BASE_S, BACKOFF_MAX_S)
                log.exception("flush failed (%d in a row); retrying in %.1f s", failures, delay)
                self._stop.wait(delay)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"flusher-{self.consumer}", daemon=True)
        self._thread.start()
        log.info("event flusher started as consumer %s", self.consumer)

    def terminate(self) -> None:
        self.stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

"""Dual write (the migration's second phase): the web app keeps writing PostgreSQL and, once a transaction commits,
sends the same change as an event. A rolled-back transaction sends nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def after_commit(session: Session, send: Callable[[], Any]) -> None:
    """Dual write: run ``send`` (e.g. ``lambda: producer.record_follow(a, b)``) once ``session`` commits, and never
    if it rolls back. The producer helper validates when it runs and raises on bad input."""
    # Imported here: a web app calling this has SQLAlchemy loaded already; one that only sends events never needs it.
    from sqlalchemy import event

    def on_commit(_: Session) -> None:
        if event.contains(session, "after_rollback", on_rollback):
            event.remove(session, "after_rollback", on_rollback)
        send()

    def on_rollback(_: Session) -> None:
        if event.contains(session, "after_commit", on_commit):
            event.remove(session, "after_commit", on_commit)

    event.listen(session, "after_commit", on_commit, once=True)
    event.listen(session, "after_rollback", on_rollback, once=True)

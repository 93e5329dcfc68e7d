"""A web app that imports the client loads none of the service (no ClickHouse, SQLAlchemy, worker or store code),
and the client validates an event without needing a broker."""

from __future__ import annotations

import json
import subprocess
import sys

from app.core.paths import REPO

FORBIDDEN = ("chdb", "clickhouse_connect", "sqlalchemy", "tasks", "app.write", "app.stores", "app.read", "app.jobs")

SCRIPT = """
import json, sys
import app.client
from app.client import EventProducer, UserMetricEventService, ValidationError, build_event, sending_app

out = {"imported": sorted(sys.modules)}
from celery import Celery

class NoBroker(Celery):
    def send_task(self, *args, **kwargs):
        raise AssertionError("validation reached the broker")

out["built"] = build_event("record_follow", follower_id=1, user_id=2).model_dump(mode="json", exclude_none=True)
refused = []
for bad in (
    lambda: UserMetricEventService(EventProducer(NoBroker("webapp"))).record_follow(3, 3),
    lambda: EventProducer(NoBroker("webapp")).set_reaction(1, 100, 16),
    lambda: build_event("record_upload", user_id=0, content_type="Model", entity_id=9),
):
    try:
        bad()
    except ValidationError as exc:
        refused.append(str(exc))
out["refused"] = refused
sender = sending_app("redis://127.0.0.1:1/0").conf
out["sender"] = [sender.task_serializer, sender.accept_content, [q.name for q in sender.task_queues],
                 sender.task_routes["record_follow"]["queue"]]
out["used"] = sorted(sys.modules)
print(json.dumps(out))
"""


def _loaded(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == name or m.startswith(name + ".") for name in FORBIDDEN)]


def test_the_client_loads_no_store_and_validates_without_a_broker() -> None:
    # Given a fresh interpreter that imports only the client and uses it on a Celery app with no broker behind it
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # Then neither importing nor using it loaded ClickHouse, SQLAlchemy, the worker or the service's packages, and
    # importing it loaded no Celery either (only sending_app does)
    assert _loaded(out["imported"]) == []
    assert [m for m in out["imported"] if m == "celery" or m.startswith(("celery.", "kombu"))] == []
    assert _loaded(out["used"]) == []
    # And a good event was built and stamped, and each bad one refused with its reason, before any send
    built = out["built"]
    assert (built["follower_id"], built["user_id"], built["is_follow"]) == (1, 2, True)
    assert built["event_id"] and built["occurred_at"]
    assert len(out["refused"]) == 3
    follow, reaction, upload = out["refused"]
    assert follow.startswith("record_follow: ") and "cannot follow themselves" in follow
    assert reaction.startswith("set_reaction: reactions: ") and "15" in reaction
    assert upload.startswith("record_upload: user_id: ") and "greater than or equal to 1" in upload
    # And the web app's sending app speaks the message contract: JSON only, the workers' queues, events routed
    assert out["sender"] == ["json", ["json"], ["events", "maintenance", "reads"], "events"]

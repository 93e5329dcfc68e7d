"""The Celery application, as workers and beat load it (``celery -A tasks.celery_app:celery_app``).

Its settings come from the environment once per process (``settings``). The task modules are listed in
``include``: a worker imports them when it starts; any other process only sends tasks by name (through
``app.stores.broker.client_app``). The worker's consumer is ``tasks.consumer``; its write path and process
signals are ``tasks.write_path``.
"""

from __future__ import annotations

from celery import Celery
from click import Option

from app.core.settings import load_settings
from tasks.config import celery_config
from tasks.write_path import WriteStep

TASK_MODULES = ("tasks.events", "tasks.reads", "tasks.maintenance", "tasks.bench")

settings = load_settings()
celery_app = Celery("usermetrics", include=TASK_MODULES)
celery_app.config_from_object(celery_config(settings))
celery_app.user_options["worker"].add(
    Option(
        ("--without-write-path",),
        is_flag=True,
        default=False,
        help="Run tasks only: no flusher, refresher or read channel, no schema check (the embedded stack's "
        "events-only worker; the engine's owner writes).",
    )
)
celery_app.steps["worker"].add(WriteStep)

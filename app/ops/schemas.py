"""JSON Schemas of the task payloads, generated from the same models that validate them.

Published in ``schemas/<task>.json`` so producers in other languages can validate before sending;
``python -m app schemas --write`` regenerates them and a test fails when the committed files drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.core.paths import SCHEMA_DIR
from app.core.payloads import PAYLOADS


def schema_for(task: str) -> dict[str, Any]:
    schema = PAYLOADS[task].model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"usermetrics/tasks/{task}.json"
    schema["title"] = task
    schema["description"] = (
        f"Keyword arguments of the Celery task `{task}` (queue `events`, JSON serializer). "
        + (schema.get("description") or "")
    ).strip()
    schema.get("properties", {}).pop("type", None)
    return schema


def render(task: str) -> str:
    return json.dumps(schema_for(task), indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task in PAYLOADS:
        path = directory / f"{task}.json"
        path.write_text(render(task))
        written.append(path)
    return written


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Tasks whose committed schema differs from the models."""
    out = []
    for task in PAYLOADS:
        path = directory / f"{task}.json"
        if not path.exists() or path.read_text() != render(task):
            out.append(task)
    return out

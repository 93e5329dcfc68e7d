"""Files the project ships beside its code: the ClickHouse migrations and the payload schemas."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SQL_DIR = REPO / "sql"
SCHEMA_DIR = REPO / "schemas"

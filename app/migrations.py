"""Versioned ClickHouse DDL from ``sql/NNNN_name.sql``, applied in order and recorded in ``schema_migrations``.

Safe to run twice (applied versions are skipped, every statement is ``IF NOT EXISTS``) and concurrently (callers
hold the ``migrate`` lock; a racing runner without it only repeats idempotent statements). An applied file whose
text changed is refused: fix forward with a new version.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.clickhouse import ClickHouse
from app.errors import PermanentError

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version   UInt32,
    name      String,
    checksum  String,
    appliedAt DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(appliedAt)
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def statements(self) -> list[str]:
        body = "\n".join(line for line in self.text.splitlines() if not line.lstrip().startswith("--"))
        return [part.strip() for part in body.split(";") if part.strip()]


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise PermanentError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise PermanentError(f"duplicate migration versions in {sql_dir}")
    return found


def applied(ch: ClickHouse) -> dict[int, str]:
    ch.command(LEDGER_DDL)
    rows = ch.rows("SELECT version, argMax(checksum, appliedAt) FROM schema_migrations GROUP BY version")
    return {int(version): str(checksum) for version, checksum in rows}


def migrate(ch: ClickHouse, sql_dir: Path = SQL_DIR) -> list[int]:
    """Apply pending migrations; return the versions applied now."""
    done = applied(ch)
    newly = []
    for migration in discover(sql_dir):
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                raise PermanentError(
                    f"migration {migration.path.name} changed after it was applied; add a new version instead"
                )
            continue
        for statement in migration.statements():
            ch.command(statement)
        ch.insert(
            "schema_migrations",
            [(migration.version, migration.name, migration.checksum, datetime.now(UTC))],
            ("version", "name", "checksum", "appliedAt"),
        )
        log.info("applied migration %04d_%s", migration.version, migration.name)
        newly.append(migration.version)
    return newly

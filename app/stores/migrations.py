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

from app.core import constants as c
from app.core.errors import PermanentError
from app.core.paths import SQL_DIR
from app.stores import broker, clickhouse, cluster_schema
from app.stores.clickhouse import ClickHouse
from app.stores.locks import redis_lock
from app.stores.runtime import Runtime

log = logging.getLogger(__name__)

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


# Migrations whose comments were corrected after deployments recorded the checksum of their whole text:
# version -> (that recorded checksum, the checksum of its statements, which have not changed since).
_COMMENTS_EDITED: dict[int, tuple[str, str]] = {
    1: (
        "011b11d1f7048a9d2e14d10a9487f2ac315c08bc8e9a2afcc51519efc49b3c99",
        "b1bf2e2f00f0a4c337e0cbe2214f33087160afb6437d277756ad4f6749229acd",
    ),
    3: (
        "57f4764943592c3ca9461ba753335da2541442af9286a4f806caacc8b6c6e3ed",
        "c718ddc0786cc22c7c7059fb36612b5f6af0e093220fe83dbf25ba6a6dd20e89",
    ),
    6: (
        "b3d1f852253cf139ab67c5904919da046aa61a408400dd1089e3b3cfb51d96fc",
        "bd677ecb06adb823cddd91fe5229ae56bace7269fc0be229aa24f2914a1d47ff",
    ),
    7: (
        "107958e626c3889dce3c702b80031acfccfa47dc37c05f3d9b23e72f1536966c",
        "11e43f6d80cd6940fbe83d4778875c0ec96de6768be0e8f6f555645f581d15d9",
    ),
}


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
        """What the migration does: its statements, comments and layout aside (a comment may be corrected)."""
        return hashlib.sha256("\n;\n".join(self.statements()).encode()).hexdigest()

    @property
    def text_checksum(self) -> str:
        """The whole file, as deployments recorded it before the statements' checksum."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def unchanged_since(self, recorded: str) -> bool:
        """Whether the statements are the ones applied when ``recorded`` was written."""
        if recorded in (self.checksum, self.text_checksum):
            return True
        return _COMMENTS_EDITED.get(self.version) == (recorded, self.checksum)

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
    """Versions applied on this node and their checksums (its ledger)."""
    ch.command(LEDGER_DDL)
    rows = ch.rows("SELECT version, argMax(checksum, appliedAt) FROM schema_migrations GROUP BY version")
    return {int(version): str(checksum) for version, checksum in rows}


def cluster_statements(ch: ClickHouse, migration: Migration) -> list[cluster_schema.ClusterStatement]:
    """The migration's statements as this deployment applies them (cluster mode: local and Distributed tables)."""
    if ch.cluster is None:
        return [cluster_schema.ClusterStatement(sql, every_node=False) for sql in migration.statements()]
    return [
        translated
        for sql in migration.statements()
        for translated in cluster_schema.translate(sql, ch.cluster.name, ch.database, ch.cluster.replication)
    ]


def migrate(ch: ClickHouse, sql_dir: Path = SQL_DIR) -> list[int]:
    """Apply pending migrations; return the versions applied now.

    In cluster mode every node keeps its own ledger: a migration's DDL runs on each node that has not recorded it
    (a node added later gets every version), its data statements run once, through the Distributed tables, and only
    while no node has it yet (a fill repeated would count its rows twice). ``ON CLUSTER`` would need the servers'
    distributed DDL queue, which not every build runs (the local cluster of ``python -m app clickhouse-cluster``
    refuses it); node by node works everywhere. Every node must answer."""
    nodes = ch.nodes()
    try:
        ledgers = [applied(node) for node in nodes]
        newly = []
        for migration in discover(sql_dir):
            recorded = [ledger.get(migration.version) for ledger in ledgers]
            if any(r is not None and not migration.unchanged_since(r) for r in recorded):
                raise PermanentError(
                    f"migration {migration.path.name} changed after it was applied; add a new version instead"
                )
            missing = [node for node, r in zip(nodes, recorded, strict=True) if r is None]
            if not missing:
                continue
            first = len(missing) == len(nodes)
            for statement in cluster_statements(ch, migration):
                if statement.every_node:
                    for node in missing:
                        node.command(statement.sql)
                elif first:
                    ch.command(statement.sql)
            for node in missing:
                node.insert(
                    "schema_migrations",
                    [(migration.version, migration.name, migration.checksum, datetime.now(UTC))],
                    ("version", "name", "checksum", "appliedAt"),
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            newly.append(migration.version)
        return newly
    finally:
        for node in nodes:
            if node is not ch:
                node.close()


def migrate_anywhere(rt: Runtime) -> list[int]:
    """Apply pending migrations in this process under the ``migrate`` lock, or, when a running worker owns the
    embedded engine, in that worker (a second process must not open the same data path)."""
    if clickhouse.owner_is_elsewhere(rt.settings):
        applied_now: list[int] = broker.through_worker(rt, c.APPLY_MIGRATIONS, timeout_s=300)
        return applied_now
    with redis_lock(rt.redis, "migrate", timeout_s=300):
        return migrate(rt.clickhouse)

"""The ClickHouse this suite runs against is a release the code declares it supports.

Every pass of the suite checks its own engine: the embedded engine (chdb, in this process) against
``CLICKHOUSE_EMBEDDED_VERSION``; a server (the server-mode and cluster passes, every node) against
``CLICKHOUSE_SERVER_VERSION``, the release the compose files pin. A dependency upgrade that moves either fails here
until the constants, the compose images and docs/deployment.md move with it.
"""

from __future__ import annotations

from app.core import constants as c
from app.stores.runtime import Runtime


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_the_engine_is_the_supported_release(rt: Runtime) -> None:
    expected = c.CLICKHOUSE_EMBEDDED_VERSION if rt.settings.clickhouse_embedded else c.CLICKHOUSE_SERVER_VERSION
    for node in rt.clickhouse.nodes():
        try:
            version = str(node.rows("SELECT version()")[0][0])
        finally:
            if node is not rt.clickhouse:
                node.close()
        assert _major_minor(version) == expected, f"ClickHouse {version}; the code declares {expected}"

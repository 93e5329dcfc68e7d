"""The legacy database: engine and schema creation (``DATABASE_URL``, else SQLite under the data dir)."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, create_engine

from app.core.settings import Settings
from app.legacy.models import Base

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine(settings: Settings) -> Engine:
    """One pooled engine per legacy database URL, shared by everything in this process."""
    url = settings.legacy_database_url
    with _engines_lock:
        if url not in _engines:
            if url.startswith("sqlite"):
                settings.data_path.mkdir(parents=True, exist_ok=True)
            _engines[url] = create_engine(url, pool_pre_ping=True)
        return _engines[url]


def create_schema(eng: Engine) -> None:
    Base.metadata.create_all(eng)


def drop_schema(eng: Engine) -> None:
    Base.metadata.drop_all(eng)

"""The legacy database: engine and schema creation (``DATABASE_URL``, else SQLite under the data dir)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

from app.legacy.models import Base
from app.settings import Settings


def engine(settings: Settings) -> Engine:
    url = settings.legacy_database_url
    if url.startswith("sqlite"):
        settings.data_path.mkdir(parents=True, exist_ok=True)
    return create_engine(url, pool_pre_ping=True)


def create_schema(eng: Engine) -> None:
    Base.metadata.create_all(eng)


def drop_schema(eng: Engine) -> None:
    Base.metadata.drop_all(eng)

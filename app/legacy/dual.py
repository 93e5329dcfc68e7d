"""Import path kept for web apps: ``from app.legacy.dual import after_commit`` (see ``app.client``)."""

from app.client import after_commit

__all__ = ["after_commit"]

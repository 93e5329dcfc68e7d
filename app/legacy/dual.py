"""Import path for web apps: ``from app.legacy.dual import after_commit`` (in ``app.write.dual_write``)."""

from app.write.dual_write import after_commit

__all__ = ["after_commit"]

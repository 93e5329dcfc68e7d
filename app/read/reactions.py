"""Import path kept for readers written against earlier releases: the reactions services are in
``app.read.reactions_service``. Importing this module warns (``DeprecationWarning``)."""

import warnings

from app.read.reactions_service import (
    FILLS,
    CacheFills,
    ReactionsResult,
    UserReactionCacheService,
    UserReactionQueryService,
    latest_reactions,
)

warnings.warn(
    "app.read.reactions is deprecated: import the reactions services from app.read.reactions_service",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "FILLS",
    "CacheFills",
    "ReactionsResult",
    "UserReactionCacheService",
    "UserReactionQueryService",
    "latest_reactions",
]

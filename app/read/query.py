"""Import path kept for readers written against earlier releases: the metrics query service is in
``app.read.metrics_service``. Importing this module warns (``DeprecationWarning``)."""

import warnings

from app.read.metrics_service import MetricsResult, UserMetricsQueryService

warnings.warn(
    "app.read.query is deprecated: import UserMetricsQueryService from app.read.metrics_service",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["MetricsResult", "UserMetricsQueryService"]

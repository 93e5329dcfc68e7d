"""Local services for development, tests and benchmarks: a ClickHouse server and cluster, a Redis Cluster, and the
embedded Redis that the stack starts when ``REDIS_URL`` is unset. The service itself never needs them, except the
embedded Redis."""

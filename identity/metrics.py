"""Prometheus metrics, one registry per app so that several apps can live in one process."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest


class Metrics:
    def __init__(self, pool_size: int):
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "identity_http_request_duration_seconds",
            "HTTP requests by method, route and status, with their latency.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.in_flight = Gauge(
            "identity_http_requests_in_flight", "Requests being served now.", registry=self.registry
        )
        self.outcomes = Counter(
            "identity_identify_outcomes",
            "POST /identify results: new_customer, new_secondary, merge, unchanged.",
            ["outcome"],
            registry=self.registry,
        )
        self.access_denied = Counter(
            "identity_access_denied",
            "Requests refused by access control, by route and reason: no_token, "
            "unknown_token, other_role, loopback_only, undeclared_route.",
            ["route", "reason"],
            registry=self.registry,
        )
        self.retries = Counter(
            "identity_transaction_retries",
            "Units of work rolled back and run again, by cause.",
            ["cause"],
            registry=self.registry,
        )
        self.connections_in_use = Gauge(
            "identity_db_connections_in_use",
            "Pooled database connections held by requests now.",
            registry=self.registry,
        )
        self.pool_waiting = Gauge(
            "identity_db_pool_waiting",
            "Requests waiting for a free pooled connection (none while POOL_SIZE >= THREADS).",
            registry=self.registry,
        )
        pool = Gauge(
            "identity_db_pool_size",
            "Database connections the pool may open.",
            registry=self.registry,
        )
        pool.set(pool_size)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

"""Prometheus metrics, one registry per app so that several apps can live in one process."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "identity_http_request_duration_seconds",
            "HTTP requests by route and status, with their latency.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.outcomes = Counter(
            "identity_identify_outcomes",
            "POST /identify results: new_customer, new_secondary, merge, unchanged.",
            ["outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "identity_transaction_retries",
            "Units of work rolled back and run again, by cause.",
            ["cause"],
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

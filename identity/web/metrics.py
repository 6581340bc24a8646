"""Prometheus metrics, one registry per app so that several apps can live in one process.

Under `python wsgi.py` every worker process writes its values to files in the folder
PROMETHEUS_MULTIPROC_DIR, which the supervisor creates empty at start (prometheus-client's
multiprocess mode); /metrics then reports the sum over all workers, whichever answers.
Gauges are summed over the live workers only: a dead worker's requests in flight are gone.
"""

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from identity.config import version

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_SUM: Final = "livesum"


class WebhookFigures:
    """The webhook deliverers' figures. Deliverers run in processes of their own, so the
    figures live in their subscribers' rows; /metrics reads them at each scrape and hands
    them over here (feed_repository.SubscriberStats) just before the exposition."""

    def __init__(self):
        self.subscribers = []

    def collect(self):
        families = {
            "delivered_events": CounterMetricFamily(
                "identity_webhook_events_delivered",
                "Events a subscriber acknowledged with a 2xx (each counted once).",
                labels=["subscriber"],
            ),
            "failed_attempts": CounterMetricFamily(
                "identity_webhook_delivery_failures",
                "Delivery attempts answered with anything but a 2xx, or not in time.",
                labels=["subscriber"],
            ),
            "lag_events": GaugeMetricFamily(
                "identity_webhook_lag_events",
                "Feed events the subscriber has not acknowledged yet.",
                labels=["subscriber"],
            ),
            "lag_seconds": GaugeMetricFamily(
                "identity_webhook_lag_seconds",
                "Age of the oldest event the subscriber has not acknowledged; 0 when up to date.",
                labels=["subscriber"],
            ),
        }
        for subscriber in self.subscribers:
            for field, family in families.items():
                family.add_metric([subscriber.name], getattr(subscriber, field))
        return list(families.values())


class BuildInfo:
    """identity_build_info{version}: always 1, the installed version in its label, so that
    dashboards and alerts can tell which release answers."""

    def collect(self):
        info = GaugeMetricFamily(
            "identity_build_info", "The running release; the value is always 1.", labels=["version"]
        )
        info.add_metric([version()], 1)
        return [info]


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
            "identity_http_requests_in_flight",
            "Requests being served now.",
            registry=self.registry,
            multiprocess_mode=_LIVE_SUM,
        )
        self.outcomes = Counter(
            "identity_identify_outcomes",
            "POST /identify results: new_customer, new_secondary, merge, unchanged.",
            ["outcome"],
            registry=self.registry,
        )
        self.hubs_suspected = Counter(
            "identity_hubs_suspected",
            "Suspected hubs newly recorded (SPEC §13), by kind of value: email, phoneNumber.",
            ["kind"],
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
            multiprocess_mode=_LIVE_SUM,
        )
        self.pool_waiting = Gauge(
            "identity_db_pool_waiting",
            "Requests waiting for a free pooled connection (none while POOL_SIZE >= THREADS).",
            registry=self.registry,
            multiprocess_mode=_LIVE_SUM,
        )
        pool = Gauge(
            "identity_db_pool_size",
            "Database connections the pools may open, over all worker processes.",
            registry=self.registry,
            multiprocess_mode=_LIVE_SUM,
        )
        pool.set(pool_size)
        self.webhooks = WebhookFigures()
        self.registry.register(self.webhooks)
        self.build_info = BuildInfo()
        self.registry.register(self.build_info)

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
            # Every worker's files, read at each scrape: the same answer from any worker.
            # The webhook figures come from the database, not from a worker: added once.
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            merged.register(self.webhooks)
            merged.register(self.build_info)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def worker_hangs() -> Counter:
    """The supervisor's count of workers killed because they stopped answering."""
    values.ValueClass = values.get_value_class()
    return Counter(
        "identity_worker_hangs",
        "Worker processes that stopped answering for WORKER_TIMEOUT_S, killed and replaced.",
        registry=None,
    )


def worker_restarts() -> Counter:
    """The supervisor's count of worker processes that died and were replaced.

    The supervisor imports this module before it creates the metrics folder, and
    prometheus-client picks single- or multi-process values when it is imported; it is
    asked again here, before this process's first metric, as its own tests do."""
    values.ValueClass = values.get_value_class()
    return Counter(
        "identity_worker_restarts",
        "Worker processes that exited unexpectedly and were replaced.",
        registry=None,
    )

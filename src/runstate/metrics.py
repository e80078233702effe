"""The pipeline's Prometheus metrics, built on a registry that the process exposes (the API's
`/metrics` in `runstate up`, a metrics port for a separate worker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runstate.resolve import ResolverStats

CHECK_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.checks = counter(
            "runstate_checks_total", "Checks run, by result (up or the error kind)", ("result",)
        )
        self.check_duration = Histogram(
            "runstate_check_duration_seconds",
            "Time a check took",
            buckets=CHECK_DURATION_BUCKETS,
            registry=registry,
        )
        self.check_results_written = counter(
            "runstate_check_results_written_total", "Check results committed to the database"
        )
        self.status_changes = counter(
            "runstate_status_changes_total", "Confirmed status changes emitted", ("to",)
        )
        self.incidents_opened = counter("runstate_incidents_opened_total", "Incidents opened")
        self.incidents_resolved = counter("runstate_incidents_resolved_total", "Incidents resolved")
        self.alerts = counter(
            "runstate_alerts_total",
            "Alert deliveries by channel and outcome (sent, failed, dead, suppressed)",
            ("channel", "outcome"),
        )
        self.dead_letters = counter(
            "runstate_dead_letters_total", "Entries sent to a dead-letter stream", ("stream",)
        )
        self.stream_lag = Gauge(
            "runstate_stream_lag",
            "Entries in a stream not yet delivered to the group",
            ("stream", "group"),
            registry=registry,
        )
        self.stream_pending = Gauge(
            "runstate_stream_pending",
            "Entries delivered to the group and not yet acknowledged",
            ("stream", "group"),
            registry=registry,
        )
        self.enqueued = counter("runstate_scheduler_enqueued_total", "Checks enqueued")
        self.skipped_pending = counter(
            "runstate_scheduler_skipped_pending_total",
            "Due checks not enqueued because the previous one is still waiting or running",
        )
        self.lateness = Histogram(
            "runstate_scheduler_lateness_seconds",
            "How late a check was enqueued after it was due",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.check_start_lateness = Histogram(
            "runstate_check_start_lateness_seconds",
            "How late a check started after it was due (queueing included)",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.scheduler_active = Gauge(
            "runstate_scheduler_active", "1 while this scheduler holds the lease", registry=registry
        )
        self.stream_trim_blocked = counter(
            "runstate_stream_trim_would_drop_unread_total",
            "Times the stream length cap was reached while entries were still unread",
            ("stream",),
        )


class MonitoringWorkerMetrics(Collector):
    """What a monitoring worker's resolver and per-host turns look like, read at scrape
    time from the counters they keep."""

    def __init__(self, dns: ResolverStats, waiting_for_host: Callable[[], int]) -> None:
        self._dns = dns
        self._waiting_for_host = waiting_for_host

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        lookups = CounterMetricFamily(
            "runstate_dns_lookups",
            "Name lookups by how they were answered: from the cache, by a query of their own,"
            " or by joining another caller's query",
            labels=("answer",),
        )
        lookups.add_metric(("cache",), self._dns.hits)
        lookups.add_metric(("query",), self._dns.misses)
        lookups.add_metric(("joined",), self._dns.joined)
        yield lookups
        yield CounterMetricFamily(
            "runstate_dns_failures", "Name lookups that failed", value=self._dns.failures
        )
        yield GaugeMetricFamily(
            "runstate_checks_waiting_for_host",
            "Checks waiting for their turn at a host already checked CHECK_MAX_PER_HOST times",
            value=self._waiting_for_host(),
        )

"""The pipeline's Prometheus metrics, built on a registry that the process exposes (the API's
`/metrics` in `runstate up`, a metrics port for a separate worker)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

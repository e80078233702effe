"""The parts each process runs, assembled from settings: the scheduler and the three workers
as separate processes (`runstate scheduler`, `runstate worker …`) or all together in one
(`runstate up`). Each part is a `Component`: a coroutine that runs until told to stop."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from runstate.channels.base import CHANNELS, Channel, load_channel_class
from runstate.checks.http import HttpCheck
from runstate.consumer import (
    BatchHandler,
    Consumer,
    ConsumerOptions,
    Release,
    consumer_name,
    each_entry,
)
from runstate.flow import Slots
from runstate.metrics import MonitoringWorkerMetrics, PipelineMetrics
from runstate.pipeline.monitor import MonitoringStage
from runstate.pipeline.notify import NotificationStage
from runstate.pipeline.schedule import Scheduler, SchedulerOptions
from runstate.pipeline.status_change import StatusChangeStage
from runstate.queue import keys
from runstate.queue.backend import QueueBackend, open_backend
from runstate.resolve import CachingResolver
from runstate.runtime import Component, heartbeat, sleep_unless_stopped
from runstate.settings import Settings
from runstate.storage.db import create_engine, session_factory
from runstate.storage.housekeeping import Housekeeping
from runstate.storage.migrate import ensure_region

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """What the pipeline's parts share within one process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    backend: QueueBackend
    registry: CollectorRegistry
    metrics: PipelineMetrics
    consumers: list[Consumer] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @classmethod
    def open(
        cls, settings: Settings, registry: CollectorRegistry, backend: QueueBackend | None = None
    ) -> Pipeline:
        engine = create_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            backend=backend
            or open_backend(settings.redis_url, dead_letter_maxlen=settings.DEAD_LETTER_MAXLEN),
            registry=registry,
            metrics=PipelineMetrics(registry),
        )

    async def aclose(self) -> None:
        for close in self.closers:
            await close()
        await self.backend.aclose()
        await self.engine.dispose()

    def consumer(
        self,
        kind: str,
        stream: str,
        group: str,
        handler: BatchHandler,
        slots: Slots | None = None,
        release: Release | None = None,
    ) -> Consumer:
        settings = self.settings
        created = Consumer(
            queue=self.backend.queue,
            stream=stream,
            group=group,
            name=consumer_name(kind),
            handler=handler,
            dead_letter_stream=keys.dead_letter_stream(stream),
            options=ConsumerOptions(
                batch_size=settings.CONSUMER_BATCH_SIZE,
                reclaim_idle_seconds=settings.RECLAIM_IDLE_SECONDS,
                max_deliveries=settings.MAX_DELIVERIES,
                shutdown_timeout_seconds=settings.SHUTDOWN_TIMEOUT_SECONDS,
                outage_retry_max_seconds=settings.OUTAGE_RETRY_MAX_SECONDS,
            ),
            on_dead_letter=lambda _entry, _reason: self.metrics.dead_letters.labels(stream).inc(),
            slots=slots,
            release=release,
        )
        self.consumers.append(created)
        return created

    # --- the parts ---------------------------------------------------------------------

    def scheduler(self) -> Component:
        settings = self.settings
        scheduler = Scheduler(
            sessions=self.sessions,
            queue=self.backend.queue,
            pending=self.backend.pending,
            lease=self.backend.lease,
            holder=consumer_name("scheduler"),
            metrics=self.metrics,
            options=SchedulerOptions(
                stream=settings.MONITORING_STREAM,
                stream_maxlen=settings.MONITORING_STREAM_MAXLEN,
                poll_seconds=settings.SCHEDULER_POLL_SECONDS,
                lease_seconds=settings.SCHEDULER_LEASE_SECONDS,
                reconcile_seconds=settings.SCHEDULER_RECONCILE_SECONDS,
                outage_retry_max_seconds=settings.OUTAGE_RETRY_MAX_SECONDS,
            ),
        )
        # Housekeeping (pruning, retention) runs in exactly one process: the scheduler that
        # holds the lease (in `runstate up`, the one process).
        housekeeping = Housekeeping.from_settings(
            settings, self.engine, self.sessions, is_leader=lambda: scheduler.is_active
        )

        async def run(stop: asyncio.Event) -> None:
            async with asyncio.TaskGroup() as parts:  # one failing stops the other
                parts.create_task(scheduler.run(stop), name="scheduler")
                parts.create_task(housekeeping.run(stop), name="housekeeping")

        return run

    def monitoring_worker(self) -> Component:
        settings = self.settings

        async def run(stop: asyncio.Event) -> None:
            region_id = await ensure_region(self.engine, settings.MONITORING_REGION_NAME)
            resolver = CachingResolver.from_settings(settings)
            check = HttpCheck(
                allow_private=settings.ALLOW_PRIVATE_TARGETS,
                max_connections=settings.CHECK_MAX_CONNECTIONS,
                resolver=resolver,
            )
            self.closers += [check.aclose, resolver.close]
            stage = MonitoringStage(
                sessions=self.sessions,
                states=self.backend.states,
                pending=self.backend.pending,
                check=check,
                region_id=region_id,
                status_change_stream=settings.STATUS_CHANGE_STREAM,
                metrics=self.metrics,
                concurrency=settings.MONITORING_CONCURRENCY,
                per_destination=settings.CHECK_MAX_PER_HOST,
                flush_results=settings.MONITORING_FLUSH_RESULTS,
                flush_seconds=settings.MONITORING_FLUSH_MS / 1000,
                outage_retry_max_seconds=settings.OUTAGE_RETRY_MAX_SECONDS,
            )
            self.closers.append(lambda: stage.aclose(settings.SHUTDOWN_TIMEOUT_SECONDS))
            self.registry.register(MonitoringWorkerMetrics(resolver.stats, stage.waiting_for_host))
            consumer = self.consumer(
                "monitoring",
                settings.MONITORING_STREAM,
                settings.MONITORING_GROUP,
                stage.handle_batch,
                slots=stage.read_ahead,  # read ahead by free check slots
                release=stage.release_dead_letters,  # a dead check frees its monitor's mark
            )
            await consumer.run(stop)

        return run

    def status_change_worker(self) -> Component:
        settings = self.settings
        stage = StatusChangeStage(
            sessions=self.sessions,
            queue=self.backend.queue,
            notification_stream=settings.NOTIFICATION_STREAM,
            metrics=self.metrics,
        )
        consumer = self.consumer(
            "status-change",
            settings.STATUS_CHANGE_STREAM,
            settings.STATUS_CHANGE_GROUP,
            each_entry(stage.handle, settings.STATUS_CHANGE_CONCURRENCY),
        )
        return consumer.run

    def notification_worker(self) -> dict[str, Component]:
        settings = self.settings
        channels: dict[str, Channel] = {
            kind: load_channel_class(kind).from_settings(settings) for kind in CHANNELS
        }
        self.closers.extend(channel.aclose for channel in channels.values())
        stage = NotificationStage(
            sessions=self.sessions,
            queue=self.backend.queue,
            channels=channels,
            settings=settings,
            metrics=self.metrics,
        )
        consumer = self.consumer(
            "notification",
            settings.NOTIFICATION_STREAM,
            settings.NOTIFICATION_GROUP,
            each_entry(stage.handle, settings.NOTIFICATION_CONCURRENCY),
        )
        # Handling an alert only records its deliveries; the due loop makes the attempts
        # (retries and flapping summaries included). Dead letters of this stream are the
        # alerts' own (written with the channel and reason); the consumer's go to the same
        # `<stream>:dlq`.
        return {"notification": consumer.run, "deliveries": stage.deliver_due}

    def watch(self, process: str) -> Component:
        """Heartbeat log line and key, and the lag and pending gauges of every consumer."""

        def describe() -> dict[str, object]:
            return {
                "component": process,
                "consumers": {
                    c.name: {
                        "handled": c.counters.handled,
                        "retried": c.counters.retried,
                        "dead_lettered": c.counters.dead_lettered,
                        "reclaimed": c.counters.reclaimed,
                        "outages": c.counters.outages,
                        "outage_retries": c.counters.outage_retries,
                    }
                    for c in self.consumers
                },
            }

        async def run(stop: asyncio.Event) -> None:
            interval = self.settings.HEARTBEAT_INTERVAL_SECONDS
            gauges = asyncio.create_task(self._update_gauges(stop, process))
            try:
                await heartbeat(stop, interval, describe)
            finally:
                await gauges

        return run

    async def _update_gauges(self, stop: asyncio.Event, process: str) -> None:
        interval = min(self.settings.HEARTBEAT_INTERVAL_SECONDS, 5.0)
        # At least a second: EX 0 is refused, and the key would never be set.
        ttl = max(1, math.ceil(self.settings.HEARTBEAT_INTERVAL_SECONDS * 3))
        while not await sleep_unless_stopped(stop, interval):
            # Best effort, each on its own (one group missing after a flush hides nothing
            # else); the consumers themselves report outages.
            for c in self.consumers:
                try:
                    stats = await self.backend.queue.stats(c.stream, c.group)
                except Exception as exc:
                    log.debug("could not update stream gauges", extra={"error": str(exc)})
                    continue
                self.metrics.stream_lag.labels(c.stream, c.group).set(stats.lag)
                self.metrics.stream_pending.labels(c.stream, c.group).set(stats.pending)
            if self.backend.redis is not None:
                try:
                    await self.backend.redis.set(
                        keys.heartbeat_key(process), str(int(time.time())), ex=ttl
                    )
                except Exception as exc:
                    log.debug("could not refresh the heartbeat key", extra={"error": str(exc)})

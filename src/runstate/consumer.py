"""The one consume loop every worker shares.

It reads its stream through a consumer group, as many entries at a time as its read-ahead
`Slots` have free (at most a batch), hands each batch to the worker's handler, and settles
each entry as soon as the handler gives its verdict: an entry is acknowledged only after the
handler says its effects are durable, and never waits for the slowest entry of its batch.
It also:

- reclaims entries left pending by a consumer that died (idle longer than `reclaim_idle`),
  while keeping its own slow entries claimed (`touch`) so nobody steals live work;
- tells the failures of an entry apart from outages of runstate's own dependencies
  (`runstate.outages`): an outage is waited out in place, the entry still claimed, and never
  counts; an entry whose handling failed `max_deliveries` times on the entry itself goes to
  the dead-letter stream, with the reason, after what it holds is released (`release`);
- survives the queue losing everything (the group is recreated) or being unreachable
  (exponential backoff with jitter up to `outage_retry_max_seconds`, no hot loop);
- on stop, reads nothing more and gives in-flight work `shutdown_timeout` to finish; what
  does not finish stays pending and is reclaimed by another consumer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from enum import Enum

from runstate.flow import Slots, as_settled
from runstate.outages import OutageRetry, describe, is_outage
from runstate.queue.base import Entry, GroupMissing, QueueUnavailable, StreamQueue
from runstate.runtime import sleep_unless_stopped

log = logging.getLogger(__name__)


# Deliveries without a verdict, in multiples of `max_deliveries`, after which an entry is
# taken to be killing the workers that handle it.
CRASH_LOOP_FACTOR = 10
# How soon a touch that failed (the queue was down) is tried again: once the queue is back,
# the claim must be renewed before a rival's reclaim finds the entry idle.
TOUCH_RETRY_SECONDS = 0.5


class Verdict(Enum):
    DONE = "done"  # effects are durable: acknowledge
    # Failed on the entry itself: left pending, delivered again after `reclaim_idle`, and
    # dead-lettered once it has failed `max_deliveries` times.
    RETRY = "retry"
    # A dependency (database, Redis, network) was down: left pending, delivered again after
    # `reclaim_idle`, and not counted as a failure of the entry.
    OUTAGE = "outage"
    DEAD = "dead"  # cannot ever succeed: dead-letter, then acknowledge


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str | None = None


DONE = Outcome(Verdict.DONE)

Outcomes = dict[str, Outcome]
# Handles a batch and yields verdicts (entry id -> outcome) as they become final, in as many
# parts as it likes. Each part is settled at once, so one slow entry holds back no other;
# an entry the handler never gives a verdict for is retried.
BatchHandler = Callable[[Sequence[Entry]], AsyncGenerator[Outcomes, None]]
EntryHandler = Callable[[Entry], Awaitable[None]]
# Releases what entries hold outside the stream (a monitoring entry's pending mark), for
# entries about to be dead-lettered and acknowledged.
Release = Callable[[Sequence[Entry]], Awaitable[None]]


class PermanentFailure(Exception):
    """Raised by an entry handler for an entry that no retry can fix (malformed, refers to
    nothing); the entry is dead-lettered with this message as the reason."""


def each_entry(
    handle: EntryHandler, concurrency: int, outages: OutageRetry | None = None
) -> EachEntry:
    """A batch handler that runs ``handle`` for every entry, at most ``concurrency`` at once,
    judging each on its own: one failing or slow entry does not hold back the others.

    A handler failing because a dependency is down (`runstate.outages.is_outage`) is run
    again in place by ``outages``, with capped backoff, for as long as the outage lasts: its
    entry stays claimed (the consumer keeps touching it), is never redelivered for it, and
    the failure never counts toward `max_deliveries`. Handlers just raise. Without
    ``outages``, the consumer that runs the handler gives it one with its own
    `outage_retry_max_seconds`."""
    return EachEntry(handle, asyncio.Semaphore(concurrency), outages)


@dataclass
class EachEntry:
    """The batch handler :func:`each_entry` makes."""

    handle: EntryHandler
    slots: asyncio.Semaphore
    outages: OutageRetry | None = None

    async def __call__(self, entries: Sequence[Entry]) -> AsyncGenerator[Outcomes, None]:
        judged = {entry.id: self._judge(entry) for entry in entries}
        async with aclosing(as_settled(judged)) as settled:
            async for outcomes in settled:
                yield outcomes

    async def _judge(self, entry: Entry) -> Outcome:
        retry = self.outages = self.outages or OutageRetry("entry handler")
        async with self.slots:
            try:
                await retry.run(lambda: self.handle(entry))
            except PermanentFailure as exc:
                return Outcome(Verdict.DEAD, str(exc))
            except Exception as exc:
                log.warning(
                    "entry failed; it will be retried",
                    extra={"entry_id": entry.id, "error": describe(exc)},
                )
                return Outcome(Verdict.RETRY, describe(exc))
            return DONE


def consumer_name(kind: str) -> str:
    """Unique per process, readable in XINFO CONSUMERS: kind, host, pid and a random tag."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class ConsumerOptions:
    batch_size: int = 100
    max_in_flight: int = 400  # entries read and not yet settled (unless given `slots`)
    block_ms: int = 1000
    reclaim_idle_seconds: float = 30.0
    max_deliveries: int = 5  # failures of the entry itself before it is dead-lettered
    shutdown_timeout_seconds: float = 10.0
    trim_every_seconds: float = 10.0
    outage_retry_max_seconds: float = 10.0  # the longest pause while the queue is down


@dataclass
class ConsumerCounters:
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    outages: int = 0  # outages of the queue seen by the consume loop
    outage_retries: int = 0  # entries left pending because a dependency was down


@dataclass
class Consumer:
    queue: StreamQueue
    stream: str
    group: str
    name: str
    handler: BatchHandler
    dead_letter_stream: str
    options: ConsumerOptions = field(default_factory=ConsumerOptions)
    counters: ConsumerCounters = field(default_factory=ConsumerCounters)
    on_dead_letter: Callable[[Entry, str], None] | None = None
    # Releases what dead-lettered entries hold, before they are acknowledged.
    release: Release | None = None
    # The read-ahead; a handler that lends slots back while entries wait shares its own.
    slots: Slots | None = None
    # Ids of the entries this consumer is handling: its own reclaim must not hand them out
    # a second time (after an outage left them idle, XAUTOCLAIM finds them too).
    _in_flight_ids: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.handler, EachEntry) and self.handler.outages is None:
            self.handler.outages = OutageRetry(
                f"{self.stream} handler", self.options.outage_retry_max_seconds
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain in-flight work (bounded) and return."""
        in_flight: set[asyncio.Task[None]] = set()
        try:
            await self._consume(stop, in_flight)
            await self._drain(in_flight)
        finally:
            # Left only when run() itself was cancelled or failed: no handler outlives it (an
            # orphaned one would go on using a queue client its owner is about to close).
            leftover = [task for task in in_flight if not task.done()]
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.wait(leftover)

    async def _consume(self, stop: asyncio.Event, in_flight: set[asyncio.Task[None]]) -> None:
        slots = self.slots = self.slots or Slots(self.options.max_in_flight)
        loop = asyncio.get_running_loop()
        next_reclaim = next_trim = 0.0
        backoff = _Backoff(cap=self.options.outage_retry_max_seconds)
        await self._ensure_group(stop, backoff)
        while not stop.is_set():
            # Read only as many entries as there are free slots: what is read is worked on
            # at once, and what is not stays in the stream for whichever consumer is free.
            # Waiting for a slot must not outlast a stop, or the loop would never reach the
            # bounded drain below.
            wanted = await slots.take(self.options.batch_size, stop)
            if not wanted:
                break
            try:
                now = loop.time()
                entries: list[Entry] = []
                if now >= next_reclaim:
                    entries = await self._reclaim(wanted)
                    # A full page means more may be waiting (a failover, or a database
                    # outage that left many entries unacknowledged): reclaim again at once.
                    if len(entries) < wanted:
                        next_reclaim = now + self.options.reclaim_idle_seconds / 2
                if not entries and not stop.is_set():
                    entries = await self.queue.read(
                        self.stream,
                        self.group,
                        self.name,
                        count=wanted,
                        block_ms=self.options.block_ms,
                    )
                if now >= next_trim:
                    await self.queue.trim_acknowledged(self.stream)
                    next_trim = now + self.options.trim_every_seconds
                backoff.reset()
            except GroupMissing:
                slots.give_back(wanted)
                log.warning("consumer group missing; recreating it", extra=self._where())
                await self._ensure_group(stop, backoff)
                continue
            except QueueUnavailable as exc:
                slots.give_back(wanted)
                await self._wait_out_outage(stop, backoff, exc)
                continue
            slots.give_back(wanted - len(entries))
            if not entries:
                continue
            task = asyncio.create_task(self._process(entries, slots))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    async def _ensure_group(self, stop: asyncio.Event, backoff: _Backoff) -> None:
        while not stop.is_set():
            try:
                await self.queue.ensure_group(self.stream, self.group)
                return
            except QueueUnavailable as exc:
                await self._wait_out_outage(stop, backoff, exc)

    async def _wait_out_outage(
        self, stop: asyncio.Event, backoff: _Backoff, exc: Exception
    ) -> None:
        delay = backoff.next()
        if backoff.attempts == 1:
            self.counters.outages += 1
        log.warning(
            "queue unavailable; backing off",
            extra={**self._where(), "delay_s": round(delay, 2), "error": str(exc)},
        )
        await sleep_unless_stopped(stop, delay)

    async def _reclaim(self, count: int) -> list[Entry]:
        entries = await self.queue.reclaim(
            self.stream,
            self.group,
            self.name,
            min_idle_ms=int(self.options.reclaim_idle_seconds * 1000),
            count=count,
        )
        # Ours already, still being handled: the reclaim only renewed their claim.
        entries = [e for e in entries if e.id not in self._in_flight_ids]
        if entries:
            self.counters.reclaimed += len(entries)
            log.info("reclaimed idle entries", extra={**self._where(), "count": len(entries)})
        return entries

    async def _process(self, entries: list[Entry], slots: Slots) -> None:
        unsettled = {e.id: e for e in entries}
        self._in_flight_ids.update(unsettled)
        keeper = asyncio.create_task(self._keep_claim(unsettled))
        try:
            await self._settle_part(unsettled, slots, self._worn_out(entries))
            async with aclosing(self.handler(list(unsettled.values()))) as verdicts:
                try:
                    async for outcomes in verdicts:
                        await self._settle_part(unsettled, slots, outcomes)
                except Exception as exc:
                    log.exception(
                        "batch handler failed; entries will be retried", extra=self._where()
                    )
                    verdict = Verdict.OUTAGE if is_outage(exc) else Verdict.RETRY
                    failed = Outcome(verdict, describe(exc))
                    await self._settle_part(unsettled, slots, dict.fromkeys(unsettled, failed))
            # Entries the handler gave no verdict for are retried: never acknowledged unhandled.
            await self._settle_part(unsettled, slots, dict.fromkeys(unsettled, _NO_VERDICT))
        finally:
            keeper.cancel()
            self._in_flight_ids.difference_update(unsettled)
            slots.give_back(len(unsettled))

    def _worn_out(self, entries: list[Entry]) -> Outcomes:
        """Entries that failed `max_deliveries` times already (their dead-lettering was cut
        short): dead without being handled again. Deliveries alone do not make an entry
        dead, as a worker that died, or an outage, is no failure of the entry, with one
        exception: an entry that came back `CRASH_LOOP_FACTOR` times as often without ever
        getting a verdict is taken to be killing its workers (an out-of-memory kill, say,
        which no handler sees), and is dead rather than retried for ever."""
        crash_loop = CRASH_LOOP_FACTOR * self.options.max_deliveries
        worn_out: Outcomes = {}
        for e in entries:
            if e.failures >= self.options.max_deliveries:
                worn_out[e.id] = Outcome(Verdict.DEAD, f"failed {e.failures} times")
            elif e.deliveries > crash_loop:
                reason = (
                    f"delivered {e.deliveries} times without a verdict: its workers may be dying"
                )
                worn_out[e.id] = Outcome(Verdict.DEAD, reason)
        return worn_out

    async def _settle_part(
        self, unsettled: dict[str, Entry], slots: Slots, outcomes: Outcomes
    ) -> None:
        """Settle the entries of ``outcomes`` still unsettled, and give their slots back. If
        the queue cannot be told, they stay pending (handled again after `reclaim_idle`)
        and the rest of the batch goes on."""
        part = [unsettled.pop(entry_id) for entry_id in outcomes if entry_id in unsettled]
        self._in_flight_ids.difference_update(e.id for e in part)
        try:
            await self._settle(part, outcomes)
        except (QueueUnavailable, GroupMissing) as exc:
            log.warning("could not settle entries", extra={**self._where(), "error": describe(exc)})
        except Exception:
            # Nobody awaits the batch's task: log here. The entries stay pending.
            log.exception("could not settle entries", extra=self._where())
        finally:
            slots.give_back(len(part))

    async def _keep_claim(self, unsettled: dict[str, Entry]) -> None:
        period = self.options.reclaim_idle_seconds / 3
        pause = period
        while True:
            await asyncio.sleep(pause)
            if not unsettled:
                continue
            # A failed touch is not fatal, but is tried again soon: the entries stay ours
            # only if the claim is renewed as soon as the queue is back.
            pause = min(period, TOUCH_RETRY_SECONDS)
            with suppress(QueueUnavailable, GroupMissing):
                await self.queue.touch(self.stream, self.group, self.name, list(unsettled))
                pause = period

    async def _settle(self, entries: list[Entry], outcomes: Outcomes) -> None:
        if not entries:
            return
        verdicts = await self._count_failures(entries, outcomes)
        dead = [e for e in entries if verdicts[e.id].verdict is Verdict.DEAD]
        if dead:
            # Released first (it is idempotent): a release that fails leaves the entry
            # pending with no dead letter yet, rather than one per time it comes back.
            if self.release is not None:
                await self.release(dead)
            await self.queue.publish(
                self.dead_letter_stream,
                [self._dead_letter(e, verdicts[e.id].reason or "") for e in dead],
            )
        finished = [e.id for e in entries if verdicts[e.id].verdict in _FINISHED]
        if finished:
            await self.queue.ack(self.stream, self.group, finished)
        tally = [o.verdict for o in verdicts.values()]
        self.counters.handled += tally.count(Verdict.DONE)
        self.counters.retried += tally.count(Verdict.RETRY)
        self.counters.outage_retries += tally.count(Verdict.OUTAGE)
        self.counters.dead_lettered += len(dead)
        for entry in dead:
            reason = verdicts[entry.id].reason or ""
            log.warning(
                "entry dead-lettered",
                extra={**self._where(), "entry_id": entry.id, "reason": reason},
            )
            if self.on_dead_letter is not None:
                # After the ack: a failing callback (metrics) must not bring the entry back,
                # which would dead-letter it again and again.
                try:
                    self.on_dead_letter(entry, reason)
                except Exception:
                    log.exception("on_dead_letter failed", extra=self._where())

    async def _count_failures(self, entries: list[Entry], outcomes: Outcomes) -> Outcomes:
        """The verdicts, with a RETRY turned DEAD for an entry whose failure now counted is
        its `max_deliveries`-th."""
        verdicts = {e.id: outcomes[e.id] for e in entries}
        failed = [e.id for e in entries if verdicts[e.id].verdict is Verdict.RETRY]
        if not failed:
            return verdicts
        counts = await self.queue.record_failures(self.stream, self.group, failed)
        for entry_id, count in zip(failed, counts, strict=True):
            if count >= self.options.max_deliveries:
                last = verdicts[entry_id].reason or "no reason given"
                verdicts[entry_id] = Outcome(Verdict.DEAD, f"failed {count} times; last: {last}")
        return verdicts

    def _dead_letter(self, entry: Entry, reason: str) -> dict[str, str]:
        return {
            **entry.fields,
            "dead_letter_reason": reason,
            "dead_letter_stream": self.stream,
            "dead_letter_entry_id": entry.id,
            "dead_letter_deliveries": str(entry.deliveries),
        }

    async def _drain(self, in_flight: set[asyncio.Task[None]]) -> None:
        if not in_flight:
            return
        log.info("finishing in-flight work", extra={**self._where(), "batches": len(in_flight)})
        _, unfinished = await asyncio.wait(in_flight, timeout=self.options.shutdown_timeout_seconds)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
            log.warning(
                "shutdown timeout: unfinished entries stay pending for another consumer",
                extra={**self._where(), "batches": len(unfinished)},
            )

    def _where(self) -> dict[str, str]:
        return {"stream": self.stream, "group": self.group, "consumer": self.name}


_NO_VERDICT = Outcome(Verdict.RETRY, "the handler gave no outcome for this entry")
_FINISHED = (Verdict.DONE, Verdict.DEAD)


class _Backoff:
    """Exponential backoff with full jitter: 0.1 s doubling up to ``cap``."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base, self.cap, self.attempts = base, cap, 0

    def next(self) -> float:
        self.attempts += 1
        return random.uniform(self.base, min(self.cap, self.base * 2**self.attempts))  # noqa: S311

    def reset(self) -> None:
        self.attempts = 0

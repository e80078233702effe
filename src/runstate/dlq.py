"""`runstate dlq list|replay|drop STREAM`: what an operator does with dead letters.

An entry no consumer could handle (malformed, or failing `MAX_DELIVERIES` times on the entry
itself) and an alert that could not be delivered go to `<stream>:dlq` with the reason. Here
they are listed, put back onto their stream to be handled again (once the cause is fixed),
or dropped. Dead letters live in Redis: `runstate up` with its in-process queue keeps them in
its own memory, where no other process can reach them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from runstate.queue import keys
from runstate.settings import Settings

# The streams by the short names the command takes, and the settings that name them.
STREAM_SETTINGS = {
    "monitoring": "MONITORING_STREAM",
    "status-change": "STATUS_CHANGE_STREAM",
    "notification": "NOTIFICATION_STREAM",
}
# What the consumer (and the notification stage) add to an entry when dead-lettering it.
DEAD_LETTER_PREFIX = "dead_letter_"
_PAGE = 500
_ENTRY_ID = re.compile(r"^\d+-\d+$")
# A URL's password (scheme://user:password@host): never shown, whatever field holds it.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)[^@/\s]+@")


class DeadLetterError(Exception):
    """Something the operator asked for that cannot be done; the message is one line."""


def resolve_stream(settings: Settings, name: str) -> str:
    """The stream ``name`` means: a short name (``monitoring``, ``status-change``,
    ``notification``), a stream's full name, or the full name of its dead-letter stream."""
    streams = {short: getattr(settings, setting) for short, setting in STREAM_SETTINGS.items()}
    if name in streams:
        return str(streams[name])
    for stream in streams.values():
        if name in (stream, keys.dead_letter_stream(stream)):
            return str(stream)
    known = ", ".join([*streams, *streams.values()])
    raise DeadLetterError(f"unknown stream {name!r}: use one of {known}")


def without_secrets(value: str) -> str:
    return _URL_PASSWORD.sub(r"\1***@", value)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    fields: dict[str, str]

    @property
    def at(self) -> datetime:
        """When it was dead-lettered (the time in its entry id)."""
        return datetime.fromtimestamp(int(self.id.split("-")[0]) / 1000, UTC)

    @property
    def deliveries(self) -> str:
        """How many times it was handed out (or, for an alert, delivery attempts made)."""
        return self.fields.get("dead_letter_deliveries") or self.fields.get("attempts") or "?"

    @property
    def reason(self) -> str:
        return self.fields.get("dead_letter_reason", "")

    @property
    def original(self) -> dict[str, str]:
        """The fields to put back onto the stream: the entry as it was published."""
        return {k: v for k, v in self.fields.items() if not k.startswith(DEAD_LETTER_PREFIX)}

    def as_text(self) -> str:
        """Its id, time, deliveries and reason on one line, then one line per field."""
        when = self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        head = f"{self.id}  {when}  deliveries {self.deliveries}  {without_secrets(self.reason)}"
        body = [f"    {k}: {without_secrets(v)}" for k, v in self.original.items()]
        return "\n".join([head, *body])

    def as_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "at": self.at.isoformat(),
                "deliveries": self.deliveries,
                "reason": without_secrets(self.reason),
                "fields": {k: without_secrets(v) for k, v in self.original.items()},
            }
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DeadLetters:
    """The dead letters of ``stream`` in Redis (``<stream>:dlq``)."""

    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self.name = keys.dead_letter_stream(stream)

    def all(self) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        start = "-"
        while True:
            page: list[Any] = self.redis.xrange(self.name, min=start, max="+", count=_PAGE) or []
            found += [
                DeadLetter(_text(entry_id), {_text(k): _text(v) for k, v in raw.items()})
                for entry_id, raw in page
            ]
            if len(page) < _PAGE:
                return found
            start = f"({found[-1].id}"

    def chosen(self, ids: Sequence[str], every: bool) -> list[DeadLetter]:
        """The dead letters named by ``ids``, or all of them with ``every``; an error names
        every id that is not one of them."""
        if every and ids:
            raise DeadLetterError("give dead-letter ids or --all, not both")
        if not every and not ids:
            raise DeadLetterError("name the dead letters by id, or give --all")
        letters = self.all()
        if every:
            return letters
        by_id = {letter.id: letter for letter in letters}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            malformed = [i for i in unknown if not _ENTRY_ID.match(i)]
            hint = " (ids look like 1733050000000-0)" if malformed else ""
            raise DeadLetterError(f"no dead letter {', '.join(unknown)} in {self.name}{hint}")
        return [by_id[i] for i in dict.fromkeys(ids)]

    def replay(self, letters: Iterable[DeadLetter]) -> int:
        """Put each one's original fields back onto the stream and remove it from the
        dead letters, in one transaction: each is replayed once, or not at all."""
        chosen = list(letters)
        if not chosen:
            return 0
        with self.redis.pipeline(transaction=True) as pipe:
            for letter in chosen:
                pipe.xadd(self.stream, dict(letter.original))  # type: ignore[arg-type]
            pipe.xdel(self.name, *(letter.id for letter in chosen))
            pipe.execute()
        return len(chosen)

    def drop(self, letters: Iterable[DeadLetter]) -> int:
        ids = [letter.id for letter in letters]
        return int(self.redis.xdel(self.name, *ids)) if ids else 0

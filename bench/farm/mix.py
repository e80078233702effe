"""Which monitor of the realistic farm does what: the failure mix, drawn once per run from
the seed, by monitor index.

Every monitor has its own name, `m<i>.farm.test`. Most are healthy targets on nginx (https,
a few plain http) and answer 200, or 503 while the harness flips them down. The failures,
each a share of all monitors (rounded up, so a small run has at least one of each):

- `slow`: answers 200 after 2-8 s (the delay is fixed per target: below the timeout it is
  UP, above it a timeout);
- `blackhole`: a listener that accepts the connection and says nothing (a timeout);
- `refused`: a port nothing listens on;
- `nxdomain`: a name the DNS server does not know;
- `dns_hang`: a name whose DNS server never answers (`m<i>.hang.farm.test`).
"""

from __future__ import annotations

import math
import random
import zlib
from collections import Counter
from dataclasses import asdict, dataclass

FAILURES = ("slow", "blackhole", "refused", "nxdomain", "dns_hang")
HEALTHY = ("https", "http")
SLOW_SECONDS = (2.0, 8.0)


@dataclass(frozen=True)
class Shares:
    """Each failure's share of all monitors, and plain http's share of the healthy ones."""

    slow: float = 0.01
    blackhole: float = 0.005
    refused: float = 0.005
    nxdomain: float = 0.005
    dns_hang: float = 0.002
    http: float = 0.05

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def slow_delay(i: int) -> float:
    """Seconds slow target ``i`` waits before it answers: fixed per target, spread evenly
    over SLOW_SECONDS (the slow server computes it from the path alone)."""
    low, high = SLOW_SECONDS
    return low + (high - low) * (zlib.crc32(str(i).encode()) % 1001) / 1000


@dataclass(frozen=True)
class Mix:
    kinds: tuple[str, ...]  # per monitor index: one of HEALTHY or FAILURES

    @classmethod
    def draw(cls, monitors: int, shares: Shares, seed: int) -> Mix:
        rng = random.Random(f"mix-{seed}")  # noqa: S311 - not security
        order = rng.sample(range(monitors), monitors)
        kinds = ["https"] * monitors
        taken = 0
        for failure in FAILURES:
            share = getattr(shares, failure)
            count = min(math.ceil(share * monitors - 1e-9), monitors - taken) if share else 0
            for i in order[taken : taken + count]:
                kinds[i] = failure
            taken += count
        healthy_left = monitors - taken
        for i in order[taken : taken + math.ceil(shares.http * healthy_left - 1e-9)]:
            kinds[i] = "http"
        return cls(tuple(kinds))

    def healthy(self) -> list[int]:
        return [i for i, kind in enumerate(self.kinds) if kind in HEALTHY]

    def counts(self) -> dict[str, int]:
        found = Counter(self.kinds)
        return {kind: found.get(kind, 0) for kind in (*HEALTHY, *FAILURES)}

    def https_share(self) -> float:
        plain = sum(1 for kind in self.kinds if kind == "http")
        return 1 - plain / len(self.kinds) if self.kinds else 0.0

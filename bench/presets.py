"""The presets: what runs (`distributed` or `up`, see bench/modes.py), how many monitors, how
often, for how long, on how many workers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    monitors: int
    interval: int  # seconds between two checks of one monitor
    duration: float  # seconds of the measured (steady) window, after every monitor's first check
    workers: int  # monitoring workers (`runstate up` is one process: 1)
    down_share: float  # share of the targets flipped down (and up again) per flip cycle
    peer_seconds: float  # measured seconds of each peer (client ceiling, blackbox exporter)
    timeout_ms: int = 5_000
    farm_processes: int = 2  # aiohttp farm only; nginx runs one master with its workers
    mode: str = "distributed"  # or "up"


PRESETS = {
    # Whole run within 60 s on 2 cores: for CI, to prove the harness works end to end.
    "smoke": Preset("smoke", 300, 5, 16, 1, 0.05, 2, farm_processes=1),
    "10k": Preset("10k", 10_000, 60, 180, 2, 0.01, 10),
    "100k": Preset("100k", 100_000, 60, 600, 2, 0.005, 10),
    # `runstate up`: the same, in one process on SQLite and the in-process queue.
    "up-smoke": Preset("up-smoke", 300, 5, 16, 1, 0.05, 2, farm_processes=1, mode="up"),
    "up-10k": Preset("up-10k", 10_000, 60, 180, 1, 0.01, 10, mode="up"),
}

"""The presets: what runs (`distributed` or `up`, see bench/modes.py), on which farm
(`realistic` or `lab`, see bench/farm/), how many monitors, how often, for how long, on how
many workers."""

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
    farm_processes: int = 2  # lab farm on aiohttp only; nginx runs one master with its workers
    mode: str = "distributed"  # or "up"
    farm: str = "realistic"  # or "lab"


PRESETS = {
    # Whole run within about a minute on 2 cores: for CI, to prove the harness works.
    # A 3 s timeout: a check that times out is over before its monitor is next due.
    "smoke": Preset("smoke", 300, 5, 16, 1, 0.05, 2, timeout_ms=3_000, farm_processes=1),
    "10k": Preset("10k", 10_000, 60, 180, 2, 0.01, 10),
    "100k": Preset("100k", 100_000, 60, 600, 2, 0.005, 10),
    # `runstate up`: the same, in one process on SQLite and the in-process queue.
    "up-smoke": Preset(
        "up-smoke", 300, 5, 16, 1, 0.05, 2, timeout_ms=3_000, farm_processes=1, mode="up"
    ),
    "up-10k": Preset("up-10k", 10_000, 60, 180, 1, 0.01, 10, mode="up"),
    # The lab farm (plain HTTP kept alive, every target healthy), as the first figures were
    # measured: `lab` is the smoke's size.
    "lab": Preset("lab", 300, 5, 16, 1, 0.05, 2, farm_processes=1, farm="lab"),
    "lab-10k": Preset("lab-10k", 10_000, 60, 180, 2, 0.01, 10, farm="lab"),
    "lab-100k": Preset("lab-100k", 100_000, 60, 600, 2, 0.005, 10, farm="lab"),
}

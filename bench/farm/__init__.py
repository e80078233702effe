"""The target farms runstate checks in a benchmark (`--farm`, by default the preset's):

- `realistic` (bench/farm/realistic.py): a name per monitor on a local DNS server, https
  with fresh connections on nginx, and a failure mix (slow, black-holed, refused, nonexistent
  and unanswered names) beside the up/down flips;
- `lab` (bench/farm/lab.py): the first farm, plain HTTP on 127.0.0.1 kept alive, every target
  healthy, for comparison with the figures measured on it.
"""

from __future__ import annotations

from pathlib import Path

from bench.farm.base import Farm, PidGroups
from bench.farm.lab import start_lab_farm
from bench.farm.mix import Shares
from bench.farm.realistic import RealisticFarm
from bench.procs import Children

FARMS = ("realistic", "lab")

__all__ = ["FARMS", "Farm", "PidGroups", "Shares", "start_farm"]


def start_farm(
    children: Children,
    work_dir: Path,
    *,
    farm: str,
    monitors: int,
    shares: Shares,
    seed: int,
    lab_server: str = "auto",
    lab_processes: int = 2,
) -> Farm:
    """Start the farm named ``farm``; ``lab_server`` picks the lab farm's server
    ("auto": nginx when installed, else aiohttp)."""
    if farm == "lab":
        return start_lab_farm(children, work_dir, lab_server, monitors, lab_processes, 1)
    return RealisticFarm(children, work_dir, monitors, shares, seed)

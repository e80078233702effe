"""`python -m bench`'s command line: which farm a preset runs on, and what the failure-mix
flags change."""

from __future__ import annotations

import random

from bench.farm.mix import Shares
from bench.options import HANG_TIMEOUT_MS, parse_args
from bench.presets import PRESETS
from bench.run import plan_flips


def test_the_smoke_and_scale_presets_run_on_the_realistic_farm_and_lab_ones_on_the_lab_farm() -> (
    None
):
    realistic = {"smoke", "10k", "100k", "up-smoke", "up-10k"}
    assert {name for name, p in PRESETS.items() if p.farm == "realistic"} == realistic
    for name in ("lab", "lab-10k", "lab-100k"):
        assert PRESETS[name].farm == "lab"
    assert parse_args(["--preset", "10k", "--farm", "lab"]).preset.farm == "lab"


def test_the_lab_presets_keep_the_scale_of_the_presets_first_measured_on_the_lab_farm() -> None:
    for lab, scale in (("lab-10k", "10k"), ("lab-100k", "100k")):
        a, b = PRESETS[lab], PRESETS[scale]
        assert (a.monitors, a.interval, a.duration, a.workers, a.down_share, a.timeout_ms) == (
            b.monitors,
            b.interval,
            b.duration,
            b.workers,
            b.down_share,
            b.timeout_ms,
        )


def test_each_failure_share_has_a_flag_and_hang_share_sets_the_black_holes_and_a_10_s_timeout() -> (
    None
):
    assert parse_args([]).shares == Shares()
    options = parse_args(["--preset", "10k", "--slow-share", "0.02", "--dns-hang-share", "0"])
    assert (options.shares.slow, options.shares.dns_hang) == (0.02, 0.0)
    hanging = parse_args(["--preset", "10k", "--hang-share", "0.02"])
    assert hanging.shares.blackhole == 0.02
    assert hanging.preset.timeout_ms == HANG_TIMEOUT_MS == 10_000
    baseline = parse_args(["--preset", "10k", "--hang-share", "0"])
    assert (baseline.shares.blackhole, baseline.preset.timeout_ms) == (0.0, 10_000)


def test_the_lab_farm_flips_the_same_targets_as_before_the_realistic_farm_existed() -> None:
    """Flips are drawn from the healthy targets; on the lab farm that is every target, and
    the draw must be the one the first lab figures were measured with."""
    n, size, cycles, seed = 10_000, 100, 3, 1
    order = random.Random(seed).sample(range(n), n)  # the draw as it was
    before = [[order[(c * size + k) % n] for k in range(size)] for c in range(cycles)]
    assert plan_flips(list(range(n)), size, cycles, seed) == before


def test_flips_are_drawn_from_the_healthy_targets_only() -> None:
    healthy = list(range(0, 1_000, 3))
    plan = plan_flips(healthy, 10, 5, seed=2)
    flipped = [i for cycle in plan for i in cycle]
    assert set(flipped) <= set(healthy)
    assert len(set(flipped)) == 50  # a fresh set each cycle

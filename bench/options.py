"""`python -m bench`'s command line: a preset and what to change in it."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.farm import FARMS, Shares
from bench.modes import MODES
from bench.presets import PRESETS, Preset

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
# Database 15 is the unit tests', 14 the integration tests' (which flush it): the scheduler
# lease and the pending-check marks are global keys, so the bench needs a database of its own.
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
RESULTS_DIR = Path(__file__).parent / "results"
HANG_TIMEOUT_MS = 10_000  # `--hang-share`: the hanging targets wait out this timeout


@dataclass
class Options:
    preset: Preset
    postgres_url: str
    redis_url: str
    lab_server: str
    shares: Shares
    results_dir: Path
    keep: bool
    seed: int
    profile: bool
    peers: bool
    env: dict[str, str] = field(default_factory=dict)

    def setting(self, name: str, default: int) -> int:
        return int(self.env.get(name, default))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark runstate: its distributed pipeline or `runstate up`.",
    )
    parser.add_argument("--preset", choices=list(PRESETS), default="smoke")
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="distributed: separate processes on PostgreSQL and Redis; up: `runstate up`, one"
        " process on SQLite and the in-process queue (default: the preset's)",
    )
    parser.add_argument(
        "--farm",
        choices=FARMS,
        help="realistic: names, https, fresh connections, failures; lab: plain HTTP kept"
        " alive, all healthy (default: the preset's)",
    )
    parser.add_argument(
        "--lab-server", choices=["auto", "nginx", "aiohttp"], default="auto", help="lab farm"
    )
    parser.add_argument("--monitors", type=int, help="override the preset's monitor count")
    parser.add_argument("--interval", type=int, help="seconds between checks of a monitor")
    parser.add_argument("--duration", type=float, help="seconds of the measured window")
    parser.add_argument("--timeout-ms", type=int, help="each monitor's check timeout")
    parser.add_argument(
        "--workers", type=int, help="monitoring worker processes (distributed mode only)"
    )
    parser.add_argument("--down-share", type=float, help="share of targets flipped per cycle")
    parser.add_argument("--peer-seconds", type=float, help="seconds of each peer's measurement")
    defaults = Shares()
    for name, what in (
        ("slow", "answer after 2-8 s"),
        ("blackhole", "accept and stay silent"),
        ("refused", "refuse connections"),
        ("nxdomain", "have names that do not exist"),
        ("dns_hang", "have names whose DNS server never answers"),
    ):
        flag = "--" + name.replace("_", "-") + "-share"
        parser.add_argument(
            flag,
            type=float,
            default=getattr(defaults, name),
            help=f"realistic farm: share of monitors that {what} (default %(default)s)",
        )
    parser.add_argument(
        "--http-share",
        type=float,
        default=defaults.http,
        help="realistic farm: share of the healthy targets on plain http (default %(default)s)",
    )
    parser.add_argument(
        "--hang-share",
        type=float,
        help="realistic farm: share of monitors hanging until a 10 s timeout (sets"
        " --blackhole-share and --timeout-ms 10000)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every runstate process (e.g. CONSUMER_BATCH_SIZE=200)",
    )
    parser.add_argument("--no-blackbox", action="store_true", help="skip the blackbox exporter")
    parser.add_argument("--profile", action="store_true", help="py-spy runstate's processes")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seed", type=int, default=1, help="which targets fail and are flipped")
    parser.add_argument("--keep", action="store_true", help="keep the database, streams and logs")
    return parser


def parse_args(argv: list[str] | None = None) -> Options:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.hang_share is not None:
        args.blackhole_share = args.hang_share
        args.timeout_ms = args.timeout_ms or HANG_TIMEOUT_MS
    overrides = {
        name: value
        for name, value in (
            ("mode", args.mode),
            ("farm", args.farm),
            ("monitors", args.monitors),
            ("interval", args.interval),
            ("duration", args.duration),
            ("timeout_ms", args.timeout_ms),
            ("workers", args.workers),
            ("down_share", args.down_share),
            ("peer_seconds", args.peer_seconds),
        )
        if value is not None
    }
    preset = replace(PRESETS[args.preset], **overrides)
    if preset.mode == "up":  # one process: its monitoring part is the one worker
        if args.workers not in (None, 1):
            parser.error("--workers: `runstate up` is one process; use --mode distributed")
        preset = replace(preset, workers=1)
    shares = Shares(
        slow=args.slow_share,
        blackhole=args.blackhole_share,
        refused=args.refused_share,
        nxdomain=args.nxdomain_share,
        dns_hang=args.dns_hang_share,
        http=args.http_share,
    )
    if sum(v for k, v in shares.as_dict().items() if k != "http") > 1:
        parser.error("the failure shares add up to more than 1")
    return Options(
        preset=preset,
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        lab_server=args.lab_server,
        shares=shares,
        results_dir=args.results_dir,
        keep=args.keep,
        seed=args.seed,
        profile=args.profile,
        peers=not args.no_blackbox,
        env=dict(item.split("=", 1) for item in args.env),
    )

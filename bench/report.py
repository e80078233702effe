"""The results of a run: one JSON document, the same as a Markdown table, and the summary
line (`summary preset=… monitors=… checks_per_s=… p99_lateness_ms=… missed=…
ratio_vs_client_ceiling=… ratio_vs_blackbox=… farm=… false_down=… cpu_ratio_vs_blackbox=…`).

Lateness in the summary is the healthy monitors' (answering targets never flipped); missed
counts every monitor's due checks, the failing ones' by the looser rule of
bench/outcomes.py."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cost, measure, outcomes
from bench.procs import Usage

if TYPE_CHECKING:
    from bench.run import Run


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def _usage_table(
    usage: list[Usage], checks: int, seconds: float, idle_rss_kib: dict[str, int], monitors: int
) -> list[dict[str, Any]]:
    per_1k = checks / 1000
    rows = []
    for u in usage:
        idle = idle_rss_kib.get(u.kind)
        # What the process holds per monitor: its peak above its size before any monitor.
        per_monitor = (u.peak_rss_kib_max - idle) * 1024 / monitors if idle and monitors else None
        rows.append(
            {
                "kind": u.kind,
                "processes": u.processes,
                "cpu_seconds": round(u.cpu_seconds, 2),
                "cpu_seconds_per_1k_checks": round(u.cpu_seconds / per_1k, 4) if per_1k else None,
                "cores": round(u.cpu_seconds / seconds, 3) if seconds else None,
                "peak_rss_mib_max": round(u.peak_rss_kib_max / 1024, 1),
                "peak_rss_mib_sum": round(u.peak_rss_kib_sum / 1024, 1),
                "idle_rss_mib": round(idle / 1024, 1) if idle else None,
                "bytes_per_monitor": round(per_monitor) if per_monitor is not None else None,
            }
        )
    return rows


def _metrics(scrapes: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """What runstate's own /metrics say over the window, summed over its processes: each
    registers every pipeline metric and leaves those of the parts it does not run at zero,
    so the distributed processes and one `runstate up` read alike."""
    before, after = (list(scrape.values()) for scrape in scrapes)

    def delta(family: str) -> float:
        return measure.counter(after, family) - measure.counter(before, family)

    def quantiles(family: str) -> dict[str, float | None]:
        buckets = measure.bucket_delta(
            measure.buckets(after, family), measure.buckets(before, family)
        )
        return {f"p{q}_ms": _ms(measure.bucket_quantile(buckets, q / 100)) for q in (50, 99)}

    return {
        "checks_run": delta("runstate_checks"),
        "results_written": delta("runstate_check_results_written"),
        "enqueued": delta("runstate_scheduler_enqueued"),
        "skipped_pending": delta("runstate_scheduler_skipped_pending"),
        "check_start_lateness": quantiles("runstate_check_start_lateness_seconds"),
        "scheduler_enqueue_lateness": quantiles("runstate_scheduler_lateness_seconds"),
        "check_duration": quantiles("runstate_check_duration_seconds"),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _peer(peer: dict[str, Any] | None, checks_per_s: float, runstate_cpu_1k: float | None) -> Any:
    if peer is None:
        return None
    cpu_1k = peer["driver_cpu_seconds"] / (peer["done"] / 1000) if peer["done"] else None
    return {
        **peer,
        "cpu_seconds_per_1k": cpu_1k,
        "ratio": _ratio(checks_per_s, peer["per_s"]),
        "cpu_efficiency_ratio": _ratio(cpu_1k, runstate_cpu_1k),
    }


def build(
    *,
    run: Run,
    users: int,
    grid: measure.GridResult,
    healthy_grid: measure.GridResult,
    false_down: dict[str, Any],
    failing: dict[str, dict[str, Any]],
    recorded: int,
    latencies: dict[str, Any],
    usage: list[Usage],
    scrapes: tuple[dict[str, Any], dict[str, Any]],
    stores: tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]],
    peers: dict[str, Any],
    profiles: dict[str, Any],
) -> dict[str, Any]:
    preset = run.preset
    seconds = run.window.seconds
    checks_per_s = recorded / seconds
    table = _usage_table(usage, recorded, seconds, run.idle_rss_kib, preset.monitors)
    runstate_cpu = sum(u.cpu_seconds for u in usage if u.kind in run.mode.kinds)
    runstate_cpu_1k = runstate_cpu / (recorded / 1000) if recorded else None
    ceiling = _peer(peers["ceiling"], checks_per_s, runstate_cpu_1k)
    blackbox = _peer(peers.get("blackbox"), checks_per_s, runstate_cpu_1k)
    if blackbox is not None:  # the exporter's CPU is what a probe costs, the driver aside
        done = blackbox["done"]
        blackbox["exporter_cpu_seconds_per_1k"] = (
            blackbox["watched_cpu_seconds"] / (done / 1000) if done else None
        )
        blackbox["cpu_efficiency_ratio"] = _ratio(
            blackbox["exporter_cpu_seconds_per_1k"], runstate_cpu_1k
        )
    assert run.farm is not None
    cpu = cost.totals(
        usage,
        runstate=run.mode.kinds,
        services=run.mode.service_pids(),
        farm=run.farm.pid_groups(),
        checks=recorded,
        seconds=seconds,
    )
    lateness = measure.distribution(healthy_grid.lateness_ms)
    failing_missed = sum(f["missed"] for f in failing.values())
    results: dict[str, Any] = {
        "preset": preset.name,
        "mode": run.mode.name,
        "run_id": run.run_id,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "system": run.mode.description,
            "monitors": preset.monitors,
            "users": users,
            "interval_s": preset.interval,
            "window_s": round(seconds, 2),
            "monitoring_workers": preset.workers,
            "down_share": preset.down_share,
            "timeout_ms": preset.timeout_ms,
            "farm": run.farm.kind,
            "farm_details": run.farm.describe(),
            "settings": run.options.env,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "timings_s": run.timings,
        "throughput": {
            "offered_per_s": preset.monitors / preset.interval,
            "checks_per_s": checks_per_s,
            "checks_recorded": recorded,
            "rows_started_in_window": grid.rows_in_window,
            # The healthy monitors' checks that started in the window, and their due rate.
            "healthy_checks_per_s": healthy_grid.rows_in_window / seconds if seconds else None,
            "healthy_offered_per_s": false_down["healthy_monitors"] / preset.interval,
        },
        "lateness_ms": lateness,  # healthy monitors: answering targets never flipped
        "lateness_answering_ms": measure.distribution(grid.lateness_ms),  # flipped ones too
        "missed": {
            "expected_slots": grid.expected_slots,
            "covered_slots": grid.covered_slots,
            "missed_answering": grid.missed,
            "missed_failing": failing_missed,
            "missed": grid.missed + failing_missed,
            "duplicate_rows": grid.duplicate_rows,
            "latest_starts": grid.latest,
        },
        "pipeline_metrics": _metrics(scrapes),
        "per_1k_checks": {  # none on SQLite and the in-process queue
            name: measure.per_thousand(stores[0][name], counts, recorded)
            for name, counts in stores[1].items()
        },
        "false_down": false_down,
        "failing": failing,
        "latency_ms": latencies,
        "processes": table,
        "cpu": cpu,
        "blackbox_cpu": cost.blackbox_ratios(cpu, blackbox),
        "runstate_cpu_seconds_per_1k_checks": runstate_cpu_1k,
        "peers": {
            "client_ceiling": ceiling,
            "blackbox": blackbox,
            "blackbox_missing": peers.get("blackbox_missing"),
        },
        "profiles": profiles,
        "process_logs": run.logs,
        "environment": run.environment,
    }
    results["summary"] = summary(results)
    return results


def _fmt(value: float | None, digits: int = 3) -> str:
    return "na" if value is None else f"{value:.{digits}f}"


def summary(results: dict[str, Any]) -> str:
    ceiling = results["peers"]["client_ceiling"]
    blackbox = results["peers"]["blackbox"]
    return (
        f"summary preset={results['preset']}"
        f" monitors={results['config']['monitors']}"
        f" checks_per_s={results['throughput']['checks_per_s']:.1f}"
        f" p99_lateness_ms={_fmt(results['lateness_ms']['p99'], 1)}"
        f" missed={results['missed']['missed']}"
        f" ratio_vs_client_ceiling={_fmt(ceiling['ratio'] if ceiling else None)}"
        f" ratio_vs_blackbox={_fmt(blackbox['ratio'] if blackbox else None)}"
        f" farm={results['config']['farm_details']['farm']}"
        f" false_down={results['false_down']['in_window']}"
        f" cpu_ratio_vs_blackbox="
        f"{_fmt(results['blackbox_cpu'].get('vs_runstate_all_processes'))}"
    )


def _row(*cells: Any) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def _d(value: Any, digits: int = 1) -> str:
    if value is None:
        return "na"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


_STORE_COUNTERS = {
    "postgres": "PostgreSQL (the scratch database's pg_stat_database)",
    "redis_calls": "Redis calls by command (INFO commandstats, the whole server)",
}


def _store_lines(per_1k: dict[str, dict[str, float]]) -> list[str]:
    if not per_1k:
        return [
            "Per 1,000 checks recorded: database transactions and queue calls n/a (counted on"
            " PostgreSQL and Redis only).",
            "",
        ]

    def listed(counts: dict[str, float]) -> str:
        return ", ".join(f"{name} {value:,.1f}" for name, value in counts.items()) or "none"

    counted = "; ".join(
        f"{_STORE_COUNTERS.get(name, name)}: {listed(counts)}" for name, counts in per_1k.items()
    )
    return [f"Per 1,000 checks recorded, in the window — {counted}.", ""]


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    names = {
        "detection": "detection: target down → incident seen open",
        "confirming_check": "… of which: target down → confirming check (`started_at`)",
        "alert_down": "alert: incident seen open → DOWN webhook received",
        "end_to_end": "end to end: target down → DOWN webhook received",
        "recovery": "recovery: target up → incident seen resolved",
        "alert_recovery": "alert: incident seen resolved → RECOVERY webhook received",
    }
    lines = [_row("latency (ms)", "n", "p50", "p99", "max"), "|---|---:|---:|---:|---:|"]
    for key, label in names.items():
        d = latency[key]
        lines.append(_row(label, d["n"], _d(d["p50"]), _d(d["p99"]), _d(d["max"])))
    if latency.get("incident_notifications", True):
        seen = (
            "when the harness got the commit's NOTIFY (a trigger on `incidents` in the scratch"
            " database), or, failing that, its 100 ms poll found the row:"
            f" {latency['incident_events_seen_by_notify']} notifications,"
            f" {latency['incident_events_seen_by_poll_only']} found by the poll first."
        )
    else:
        seen = (
            "when the harness's 100 ms poll of `incidents` found the row (SQLite cannot"
            " notify another process): up to 100 ms after the commit, so detection and recovery"
            " read up to 100 ms long and the alert latencies as much short (even negative)."
        )
    lines += [
        "",
        f"Flipped targets: {latency['flips']}; undetected: {latency['undetected']};"
        f" not seen recovered: {latency['unrecovered']}; incidents on healthy targets never"
        f" flipped: {latency['spurious_incidents']}; on failing targets:"
        f" {latency.get('incidents_on_failing_targets', 0)};"
        f" webhooks received: {latency['webhooks_received']}"
        f" (signature verified: {latency['webhooks_verified']}). 'Seen open' and 'seen"
        f" resolved' are {seen}",
    ]
    return lines


def _peer_lines(results: dict[str, Any]) -> list[str]:
    peers = results["peers"]
    through = results["throughput"]["checks_per_s"]
    lines = [
        _row(
            "same farm, same run",
            "checks/s",
            "CPU s / 1,000 checks",
            "runstate's rate ÷ this",
            "this CPU ÷ runstate's CPU per check",
        ),
        "|---|---:|---:|---:|---:|",
        _row(
            f"runstate ({results['mode']} mode)",
            _d(through),
            _d(results["runstate_cpu_seconds_per_1k_checks"], 3),
            "1",
            "1",
        ),
    ]
    ceiling = peers["client_ceiling"]
    lines.append(
        _row(
            f"check client ceiling (HttpCheck, tight loop x {ceiling['processes']})",
            _d(ceiling["per_s"]),
            _d(ceiling["cpu_seconds_per_1k"], 3),
            _d(ceiling["ratio"], 3),
            _d(ceiling["cpu_efficiency_ratio"], 3),
        )
    )
    blackbox = peers["blackbox"]
    if blackbox is None:
        lines.append(_row("prometheus-blackbox-exporter", "na", "na", "na", "na"))
    else:
        lines.append(
            _row(
                "prometheus-blackbox-exporter (/probe, http_2xx)",
                _d(blackbox["per_s"]),
                _d(blackbox["exporter_cpu_seconds_per_1k"], 3) + " (exporter only)",
                _d(blackbox["ratio"], 3),
                _d(blackbox["cpu_efficiency_ratio"], 3),
            )
        )
    lines += [
        "",
        "The pipeline runs at the preset's offered load (monitors ÷ interval), the peers flat"
        " out, so the rate ratio is how much of the peer's ceiling the preset uses; the CPU"
        " ratio compares the cost of one check (below 1: runstate spends more per check).",
    ]
    if peers.get("blackbox_missing"):
        lines.append(f"Blackbox exporter: na ({peers['blackbox_missing']}).")
    return lines


OTHER_LOAD_WARNING = 0.25  # cores used by processes outside the run


def _environment_lines(environment: dict[str, Any], cpus: int | None) -> list[str]:
    if not environment:
        return []
    other = environment["machine_busy_cores"] - environment["run_cores"]
    line = (
        f"During the window the machine was busy {environment['machine_busy_cores']:.2f} of"
        f" {cpus} cores: {environment['run_cores']:.2f} for this run's processes,"
        f" {other:.2f} for everything else."
    )
    warnings = []
    if other > OTHER_LOAD_WARNING:
        warnings.append("other processes competed for the CPU")
    warnings += [
        f"{name} restarted during the window" for name in environment["services_restarted"]
    ]
    if warnings:
        line += f" **Disturbed run: {'; '.join(warnings)} — not comparable with a quiet one.**"
    return [line, ""]


def _log_lines(logs: dict[str, Any]) -> list[str]:
    lines = [
        _row("process", "handled", "retried", "reclaimed", "dead-lettered", "warnings + errors"),
        "|---|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for name, digest in logs.items():
        counters = list((digest.get("consumers") or {}).values())
        total = {k: sum(c.get(k, 0) for c in counters) for k in ("handled", "retried", "reclaimed")}
        dead = sum(c.get("dead_lettered", 0) for c in counters)
        lines.append(
            _row(
                name,
                total["handled"],
                total["retried"],
                total["reclaimed"],
                dead,
                digest["warnings_and_errors"],
            )
        )
        examples = digest.get("examples", {})
        notes += [
            f"- {name}: {message} (x{n})"
            + (f" — e.g. `{examples[message]}`" if examples.get(message) else "")
            for message, n in digest["messages"].items()
        ]
    lines.append("")
    lines.append("Consumer counters from each process's last heartbeat (the whole run).")
    return [*lines, *(["", *notes] if notes else []), ""]


def _profile_lines(profiles: dict[str, Any]) -> list[str]:
    if not profiles:
        return []
    if "error" in profiles and isinstance(profiles["error"], str):
        return [f"Profiles: {profiles['error']}.", ""]
    lines = ["## Where the CPU went (py-spy, share of samples)", ""]
    for name, found in profiles.items():
        if "error" in found:
            lines += [f"{name}: {found['error']}", ""]
            continue
        packages = ", ".join(f"{pkg} {pct}%" for pkg, pct in found["self_by_package_pct"])
        lines += [
            f"**{name}** ({found['samples']:,} samples; raw stacks: `{found['raw']}`)",
            "",
            f"By package (leaf frame): {packages}.",
            "",
            _row("self %", "leaf frame", "inclusive %", "runstate frame on the stack"),
            "|---:|---|---:|---|",
        ]
        for own, incl in zip(
            found["self_pct"], found["runstate_inclusive_pct"] + [("", "")] * 15, strict=False
        ):
            lines.append(_row(own[1], f"`{own[0]}`", incl[1], f"`{incl[0]}`" if incl[0] else ""))
        lines.append("")
    return lines


def markdown(results: dict[str, Any]) -> str:
    config, through, late = results["config"], results["throughput"], results["lateness_ms"]
    missed, metrics = results["missed"], results["pipeline_metrics"]
    lines = [
        f"# runstate benchmark — preset {results['preset']} ({results['mode']} mode) —"
        f" {results['date']}",
        "",
        f"{config['monitors']:,} monitors ({config['users']:,} users) every"
        f" {config['interval_s']} s on {config['system']};"
        f" farm: {config['farm_details']['farm']} ({config['farm']}),"
        f" measured window {config['window_s']} s;"
        f" {results['machine']['cpus']} CPUs, Python {results['machine']['python']}.",
        "",
        *_environment_lines(results.get("environment") or {}, results["machine"]["cpus"]),
        _row("throughput", "value"),
        "|---|---:|",
        _row("offered (monitors ÷ interval), checks/s", _d(through["offered_per_s"])),
        _row("sustained, recorded in the database, checks/s", _d(through["checks_per_s"])),
        _row("checks recorded in the window", _d(through["checks_recorded"])),
        _row(
            "healthy monitors: started in the window, checks/s (due: "
            f"{_d(through['healthy_offered_per_s'])})",
            _d(through["healthy_checks_per_s"]),
        ),
        _row("checks run (workers' counter)", _d(metrics["checks_run"], 0)),
        _row(
            "enqueued / skipped as still pending (scheduler)",
            f"{_d(metrics['enqueued'], 0)} / {_d(metrics['skipped_pending'], 0)}",
        ),
        "",
        _row("scheduling lateness (check start - due time), ms", "p50", "p99", "max"),
        "|---|---:|---:|---:|",
        _row(
            "healthy monitors, from the check rows on the scheduler's grid",
            _d(late["p50"]),
            _d(late["p99"]),
            _d(late["max"]),
        ),
        _row(
            "every answering monitor (the flipped ones too)",
            _d(results["lateness_answering_ms"]["p50"]),
            _d(results["lateness_answering_ms"]["p99"]),
            _d(results["lateness_answering_ms"]["max"]),
        ),
        _row(
            "workers' histogram (bucketed)",
            _d(metrics["check_start_lateness"]["p50_ms"]),
            _d(metrics["check_start_lateness"]["p99_ms"]),
            "",
        ),
        _row(
            "scheduler's enqueue lateness (bucketed)",
            _d(metrics["scheduler_enqueue_lateness"]["p50_ms"]),
            _d(metrics["scheduler_enqueue_lateness"]["p99_ms"]),
            "",
        ),
        _row(
            "check duration (bucketed)",
            _d(metrics["check_duration"]["p50_ms"]),
            _d(metrics["check_duration"]["p99_ms"]),
            "",
        ),
        "",
        f"Missed checks (due in the window, not run within one interval): **{missed['missed']:,}**"
        f" ({missed['missed_answering']:,} of {missed['expected_slots']:,} due on answering"
        f" targets, {missed['missed_failing']:,} on failing ones); duplicate rows for one slot:"
        f" {missed['duplicate_rows']:,}."
        + (
            " Latest starts (over 1 s late): "
            + "; ".join(
                f"{x['website_id'][:8]}… at {x['started'][11:23]} ({x['lateness_ms']:,.0f} ms)"
                for x in missed["latest_starts"]
            )
            + "."
            if missed["latest_starts"]
            else ""
        ),
        "",
        *outcomes.lines(config["farm_details"], results["false_down"], results["failing"]),
        *_store_lines(results.get("per_1k_checks") or {}),
        *_latency_lines(results["latency_ms"]),
        "",
        *cost.lines(results["cpu"], results["blackbox_cpu"]),
        _row(
            "process kind",
            "processes",
            "CPU s",
            "CPU ms / check",
            "cores",
            "peak RSS MiB (max)",
            "peak RSS MiB (sum)",
            "RSS MiB before any monitor",
            "peak above that, bytes / monitor",
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            _row(
                p["kind"],
                p["processes"],
                _d(p["cpu_seconds"], 2),
                _d(p["cpu_seconds_per_1k_checks"], 3),
                _d(p["cores"], 2),
                _d(p["peak_rss_mib_max"]),
                _d(p["peak_rss_mib_sum"]),
                _d(p["idle_rss_mib"]),
                _d(p["bytes_per_monitor"], 0),
            )
            for p in results["processes"]
        ),
        "",
        *_peer_lines(results),
        "",
        *_log_lines(results.get("process_logs") or {}),
        *_profile_lines(results.get("profiles") or {}),
        f"`{results['summary']}`",
        "",
    ]
    return "\n".join(lines)


def write(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{results['preset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    md, js = directory / f"{stem}.md", directory / f"{stem}.json"
    md.write_text(markdown(results))
    js.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return md, js

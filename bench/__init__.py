"""The runstate benchmark: `python -m bench --preset smoke|10k|100k|up-smoke|up-10k` (or
`make bench`).

It starts a target farm, a webhook receiver and runstate on loopback (the distributed
pipeline on PostgreSQL and Redis, or `runstate up` in one process on SQLite), runs
N monitors for the preset's duration, flips some targets down and up, and reports
throughput, scheduling lateness, missed checks, detection and alert latency, and CPU and
memory per process kind, next to the raw ceiling of the check client and (when installed)
prometheus-blackbox-exporter on the same targets. See bench/README.md.
"""

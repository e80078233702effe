"""The runstate benchmark: `python -m bench --preset smoke|10k|100k` (or `make bench`).

It starts a target farm, a webhook receiver and the distributed pipeline on loopback, runs
N monitors for the preset's duration, flips some targets down and up, and reports
throughput, scheduling lateness, missed checks, detection and alert latency, and CPU and
memory per process kind, next to the raw ceiling of the check client and (when installed)
prometheus-blackbox-exporter on the same targets. See bench/README.md.
"""

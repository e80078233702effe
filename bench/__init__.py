"""The runstate benchmark: `python -m bench --preset smoke|10k|100k|up-smoke|up-10k|lab|
lab-10k|lab-100k` (or `make bench`).

It starts a target farm (realistic: names on a local DNS server, https with fresh
connections, a failure mix; or lab: plain HTTP kept alive), a webhook receiver and runstate
on loopback (the distributed pipeline on PostgreSQL and Redis, or `runstate up` in one
process on SQLite), runs N monitors for the preset's duration, flips some healthy targets
down and up, and reports throughput, scheduling lateness, missed checks, false DOWN,
detection and alert latency, and CPU and memory per process kind (the farm's apart), next
to the raw ceiling of the check client and (when installed) prometheus-blackbox-exporter on
the same targets. See bench/README.md.
"""

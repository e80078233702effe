"""History that lasts: raw checks kept short, rollups kept long, and the uptime arithmetic.

- `latency.py`: the fixed latency histogram every rollup keeps, and percentiles from it;
- `partitions.py`: PostgreSQL's daily partitions of `website_checks`, made ahead and dropped;
- `retention.py`: what ages out, and when (raw checks, hourly and daily rollups);
- `rollups.py`: the rollups updated in the same transaction as the checks they summarise;
- `windows.py`: the windows figures are given for (whole UTC hours and days ending now);
- `uptime.py`: time-weighted uptime and SLA figures, in one query per request;
- `response_times.py`: response times from the rollups, downsampled in SQL.

Computing a figure lives here; showing it lives in the API (and later the web pages).
"""

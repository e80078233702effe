"""nginx (Debian's) for the farms: where it is, and the realistic farm's server (both farms' config,
the lab farm's as it always was).

The realistic farm's nginx serves every healthy target on one https port and one plain-http
port, as `*.farm.test`: keep-alive off (`keepalive_timeout 0`: the connection closes after
the answer), no session tickets, no session cache, so every check is a new connection and a
full handshake. `/t/<i>` answers 200, or 503 while the file `down/t/<i>` exists.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.farm.tls import ZONE, Pki
from bench.procs import Child, Children

NGINX_PATHS = ("/usr/sbin/nginx",)
NGINX_WORKERS = 2  # one per core of the reference machine: TLS handshakes are the farm's work

# What both farms' nginx share; each farm adds its connection rules and its listeners.
_NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
{connections}
    server {{
{listeners}
        root {dir}/down;
        location /t/ {{
            if (-f $request_filename) {{ return 503 "down\\n"; }}
            return 200 "ok\\n";
        }}
        location / {{ return 404; }}
    }}
}}
"""
# The lab farm: plain http, connections kept alive for as long as a run lasts.
LAB_CONNECTIONS = """\
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/plain;"""
# The realistic farm: every check a new connection and a full handshake.
FRESH_CONNECTIONS = """\
    keepalive_timeout 0;
    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;"""


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((p for p in NGINX_PATHS if Path(p).is_file()), None)


def start_nginx(
    children: Children,
    binary: str,
    directory: Path,
    *,
    workers: int,
    connections: str,
    listeners: str,
) -> Child:
    """nginx as a child process, its files in ``directory`` (which holds `tmp/` and
    `down/t/`, readable by nginx's workers)."""
    conf = directory / "nginx.conf"
    conf.write_text(
        _NGINX_CONF.format(
            workers=workers, dir=directory, connections=connections, listeners=listeners
        )
    )
    return children.start(
        "farm", "farm-nginx", [binary, "-p", str(directory), "-e", "stderr", "-c", str(conf)]
    )


def start_https_nginx(
    children: Children, binary: str, directory: Path, https_port: int, http_port: int, pki: Pki
) -> Child:
    """The realistic farm's nginx: https and plain http for every name of the zone."""
    listeners = f"""\
        listen 127.0.0.1:{https_port} ssl backlog=4096;
        listen 127.0.0.1:{http_port} backlog=4096;
        server_name *.{ZONE};
        ssl_certificate {pki.chain};
        ssl_certificate_key {pki.key};"""
    return start_nginx(
        children,
        binary,
        directory,
        workers=NGINX_WORKERS,
        connections=FRESH_CONNECTIONS,
        listeners=listeners,
    )

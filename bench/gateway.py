"""Image gateway throughput: a large study retrieved through the gateway vs straight from the archive.

Setup (tests/infra/gateway_rig.py): one real Orthanc with a generated study of incompressible 16-bit
pixel data (default 300 MB), and the facade under gunicorn (gthread) in front of it. Each round
retrieves the whole study (WADO-RS, multipart/related) once directly and once through the gateway,
in alternating order, streaming to nowhere; the ratio of the median throughputs is the figure (target
>= 0.8x). The gunicorn worker's peak RSS (VmHWM) before and after says whether relaying holds data.

With --nginx (the deployed topology, P4 behind nginx): two nginx servers from deploy/nginx.template.conf in
front of the same facade (gateway.relay: nginx), one with the include `python -m app nginx-config` prints
(the facade answers X-Accel-Redirect and nginx streams from the archive) and one without it (the facade
relays in Python); each round retrieves the study directly, through nginx with X-Accel-Redirect and
through nginx with the Python relay, and through a plain nginx proxy straight to the archive (the nginx hop
alone, no facade), rotating the order (target: X-Accel >= 0.95x direct).

Run: python -m bench.gateway [--megabytes 300] [--rounds 5] [--nginx]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.results import write_section
from tests.deploy.native import Nginx
from tests.deploy.support import render
from tests.infra import free_port
from tests.infra.gateway_rig import GatewayRig


def retrieve(url: str, headers: dict[str, str]) -> tuple[int, float, float]:
    """(bytes, seconds, client CPU seconds) of one streamed retrieval."""
    began, cpu = time.perf_counter(), time.process_time()
    size = 0
    with requests.get(url, headers=headers, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            size += len(chunk)
    return size, time.perf_counter() - began, time.process_time() - cpu


def nginx_front(rig: GatewayRig, folder: Path, accel: bool) -> Nginx:
    """nginx as deployed in front of the rig's facade, with (accel) or without the generated include."""
    from app.settings import load_settings
    from app.web.accel import nginx_config

    included = folder / "gateway"
    included.mkdir(parents=True)
    if accel:
        assert rig.config_path is not None
        (included / "gateway.conf").write_text(nginx_config(load_settings(rig.config_path)))
    port = free_port()
    values = {
        "LISTEN_PORT": str(port),
        "FACADE_A_HOST": "127.0.0.1",
        "FACADE_A_PORT": str(rig.port),
        "FACADE_B_HOST": "127.0.0.1",
        "FACADE_B_PORT": str(rig.port),
    }
    return Nginx(folder, port, render.render(render.NGINX_TEMPLATE, values)).start()


def plain_proxy(rig: GatewayRig, folder: Path) -> Nginx:
    """nginx proxying straight to the archive, with the relay location's streaming settings and no facade:
    what the nginx hop alone costs, so that the X-Accel figure can be read apart from it."""
    archive = rig.orthanc.url
    port = free_port()
    site = f"""server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass {archive};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_buffer_size 1m;
        proxy_buffers 4 1m;
        proxy_busy_buffers_size 2m;
        proxy_max_temp_file_size 0;
    }}
}}
"""
    return Nginx(folder, port, site).start()


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def nginx_workers(server: Nginx) -> list[int]:
    assert server.process is not None
    pid = server.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def behind_nginx(args: argparse.Namespace) -> None:
    """P4 behind nginx: direct vs X-Accel-Redirect vs the Python relay, side by side."""
    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-nginx-"))
    load_start = os.getloadavg()[0]
    with GatewayRig(megabytes=args.megabytes, chunk_bytes=args.chunk_bytes, relay="nginx") as rig:
        accel = nginx_front(rig, folder / "accel", accel=True)
        python = nginx_front(rig, folder / "python", accel=False)
        plain = plain_proxy(rig, folder / "plain")
        try:
            path = rig.gateway_url().split(f":{rig.port}", 1)[1]
            archive_path = rig.direct_url().split(rig.orthanc.url, 1)[1]
            variants = {
                "direct": (rig.direct_url(), {"Accept-Encoding": "identity"}),
                "nginx proxy": (plain.origin + archive_path, {"Accept-Encoding": "identity"}),
                "X-Accel": (accel.origin + path, rig.headers),
                "Python relay": (python.origin + path, rig.headers),
            }
            for url, headers in variants.values():
                retrieve(url, headers)  # warm the disk cache, the worker and nginx
            speeds: dict[str, list[float]] = {name: [] for name in variants}
            cpu = {name: {"archive": 0.0, "gateway": 0.0, "nginx": 0.0, "client": 0.0} for name in variants}
            names = list(variants)
            size = 0
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    url, headers = variants[name]
                    before = rig.cpu_seconds()
                    nginx_before = cpu_of(nginx_workers(accel) + nginx_workers(python) + nginx_workers(plain))
                    size, seconds, client_cpu = retrieve(url, headers)
                    after = rig.cpu_seconds()
                    nginx_cpu = cpu_of(nginx_workers(accel) + nginx_workers(python) + nginx_workers(plain))
                    cpu[name]["nginx"] += nginx_cpu - nginx_before
                    speeds[name].append(size / seconds / 1e6)
                    for process in ("archive", "gateway"):
                        cpu[name][process] += after[process] - before[process]
                    cpu[name]["client"] += client_cpu
            relayed = sum(1 for line in accel.access_lines() if "/_gateway/relay/big/" in line)
        finally:
            accel.stop()
            python.stop()
            plain.stop()
            shutil.rmtree(folder, ignore_errors=True)
    load_end = os.getloadavg()[0]
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    ratio = medians["X-Accel"] / medians["direct"]
    python_ratio = medians["Python relay"] / medians["direct"]
    hop_ratio = medians["nginx proxy"] / medians["direct"]
    accel_vs_hop = medians["X-Accel"] / medians["nginx proxy"]
    hop_mbs = medians["nginx proxy"]
    # Within a round the paths run back to back: their ratio there is less exposed to the machine's swings.
    paired = statistics.median(a / d for a, d in zip(speeds["X-Accel"], speeds["direct"], strict=True))
    paired_hop = statistics.median(a / p for a, p in zip(speeds["X-Accel"], speeds["nginx proxy"], strict=True))
    gigabytes = size * args.rounds / 1e9

    def per_gb(name: str) -> str:
        return ", ".join(f"{process} {seconds / gigabytes:.2f}" for process, seconds in cpu[name].items())

    total = {name: sum(cpu[name].values()) / gigabytes for name in cpu}

    met = "yes" if ratio >= 0.95 else "no"
    direct_mbs, accel_mbs, python_mbs = medians["direct"], medians["X-Accel"], medians["Python relay"]
    body = f"""A {size / 1e6:.0f} MB study (WADO-RS, multipart/related, incompressible 16-bit pixel data) from one
Orthanc on loopback: directly, through nginx with the facade handing the relay over (gateway.relay: nginx,
X-Accel-Redirect to the internal location `python -m app nginx-config` generates) and through nginx with the
facade relaying in Python (the same facade, an nginx without the include); gunicorn 1 worker (gthread),
nginx 1 worker each, {args.rounds} rounds rotating the order; MB/s per retrieval, medians. Archive, nginx,
facade and client share this machine's {os.cpu_count()} cores; load average at start / end {load_start:.1f} /
{load_end:.1f} (other processes share the machine).

| target | direct MB/s | through nginx MB/s | ratio | met? |
|---|---|---|---|---|
| **P4 behind nginx: X-Accel >= 0.95x direct** | {direct_mbs:.0f} | {accel_mbs:.0f} | **{ratio:.2f}x** | {met} |
| for comparison: the Python relay behind nginx | {direct_mbs:.0f} | {python_mbs:.0f} | {python_ratio:.2f}x | |
| the nginx hop alone: a plain nginx proxy to the archive | {direct_mbs:.0f} | {hop_mbs:.0f} | {hop_ratio:.2f}x | |
| the hand-over: X-Accel vs the plain proxy | {hop_mbs:.0f} | {accel_mbs:.0f} | {accel_vs_hop:.2f}x | |
| paired within each round, median: X-Accel / direct; X-Accel / plain proxy | | | {paired:.2f}x; {paired_hop:.2f}x | |

Retrievals nginx relayed from its internal location (access log): {relayed} of {args.rounds + 1} through the
X-Accel server (the warm-up included).

CPU per GB moved (seconds, user + system; all rounds): direct: {per_gb("direct")}; nginx proxy:
{per_gb("nginx proxy")}; X-Accel: {per_gb("X-Accel")};
Python relay: {per_gb("Python relay")}. All processes together: direct {total["direct"]:.2f}, X-Accel
{total["X-Accel"]:.2f} ({total["direct"] / total["X-Accel"]:.2f}x the direct path's), Python relay
{total["Python relay"]:.2f} ({total["direct"] / total["Python relay"]:.2f}x): on cores that archive, proxy and
client share, throughput follows the CPU a byte costs. What the facade's checks and hand-over cost is the
row "X-Accel vs the plain proxy"; the rest of the gap to direct is nginx's own hop.

All rounds, MB/s: {"; ".join(f"{name} " + ", ".join(f"{v:.0f}" for v in values) for name, values in speeds.items())}.
"""
    print(write_section("Image gateway behind nginx: X-Accel-Redirect (bench/gateway.py --nginx)", body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk-bytes", type=int, default=None, help="gateway.chunk_bytes (default: the app's)")
    parser.add_argument(
        "--nginx", action="store_true", help="P4 behind nginx: direct vs X-Accel-Redirect vs the Python relay"
    )
    args = parser.parse_args()
    if args.nginx:
        behind_nginx(args)
        return
    with GatewayRig(megabytes=args.megabytes, chunk_bytes=args.chunk_bytes) as rig:
        direct_headers = {"Accept-Encoding": "identity"}
        retrieve(rig.direct_url(), direct_headers)  # warm the archive's disk cache
        retrieve(rig.gateway_url(), rig.headers)  # and the worker
        rss_before = rig.worker_peak_rss_kib()
        direct: list[float] = []
        via: list[float] = []
        cpu = {
            "direct": {"archive": 0.0, "gateway": 0.0, "client": 0.0},
            "gateway": {"archive": 0.0, "gateway": 0.0, "client": 0.0},
        }
        size = 0
        for round_ in range(args.rounds):
            order = [("direct", rig.direct_url(), direct_headers), ("gateway", rig.gateway_url(), rig.headers)]
            for name, url, headers in order if round_ % 2 == 0 else reversed(order):
                before = rig.cpu_seconds()
                size, seconds, client_cpu = retrieve(url, headers)
                after = rig.cpu_seconds()
                (direct if name == "direct" else via).append(size / seconds / 1e6)
                for process in ("archive", "gateway"):
                    cpu[name][process] += after[process] - before[process]
                cpu[name]["client"] += client_cpu
        rss_after = rig.worker_peak_rss_kib()
    direct_mbs, via_mbs = statistics.median(direct), statistics.median(via)
    ratio = via_mbs / direct_mbs
    met = "yes" if ratio >= 0.8 else "no"

    def per_gb(kind: str, process: str) -> str:
        return f"{cpu[kind][process] / (size * args.rounds / 1e9):.2f}"

    body = f"""A {size / 1e6:.0f} MB study (WADO-RS, multipart/related, {size // (2 * 1024 * 1024)} instances of
incompressible 16-bit pixel data) from one Orthanc on loopback, directly and through the gateway under
gunicorn (1 worker, gthread), {args.rounds} rounds alternating the order; MB/s per retrieval, medians.
Facade, archive and client share this machine's cores.

| target | direct MB/s (median) | gateway MB/s (median) | ratio | met? |
|---|---|---|---|---|
| gateway throughput >= 0.8x direct | {direct_mbs:.0f} | {via_mbs:.0f} | **{ratio:.2f}x** | {met} |

CPU per GB moved (seconds, user + system; all rounds): direct retrievals: archive {per_gb("direct", "archive")},
client {per_gb("direct", "client")}; through the gateway: archive {per_gb("gateway", "archive")}, gateway
{per_gb("gateway", "gateway")}, client {per_gb("gateway", "client")}. The three processes share {os.cpu_count()} cores.

All rounds, MB/s: direct {", ".join(f"{v:.0f}" for v in direct)}; gateway {", ".join(f"{v:.0f}" for v in via)}.

Memory: the gunicorn worker's peak RSS (VmHWM) was {rss_before / 1024:.1f} MiB before the measured
retrievals and {rss_after / 1024:.1f} MiB after relaying {args.rounds} x {size / 1e6:.0f} MB
(growth {(rss_after - rss_before) / 1024:.1f} MiB): the study is streamed, never held.
"""
    print(write_section("Image gateway throughput and memory (bench/gateway.py)", body))


if __name__ == "__main__":
    main()

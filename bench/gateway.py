"""Image gateway throughput: a large study retrieved through the gateway vs straight from the archive.

Setup (tests/infra/gateway_rig.py): one real Orthanc with a generated study of incompressible 16-bit
pixel data (default 300 MB), and the facade under gunicorn (gthread) in front of it. Each round
retrieves the whole study (WADO-RS, multipart/related) once directly and once through the gateway,
in alternating order, streaming to nowhere; the ratio of the median throughputs is the figure (target
>= 0.8x). The gunicorn worker's peak RSS (VmHWM) before and after says whether relaying holds data.

Run: python -m bench.gateway [--megabytes 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import requests

from bench.results import write_section
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk-bytes", type=int, default=None, help="gateway.chunk_bytes (default: the app's)")
    args = parser.parse_args()
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

"""The load generator of bench.load (P5): locust as a library, in a child process of its own.

locust monkey-patches the standard library for gevent when it is imported; in its own process that
patching never reaches the bench's proxies and measurements (real threads in the parent), and the
generator has an interpreter (and GIL) of its own.

Protocol with the parent: `python -m bench.loadgen SPEC.json OUT.json`; the child prints "ready" once
locust is set up, waits for a line on stdin, runs the users for spec["duration"] seconds, prints
"done", lets the requests in flight finish (none is started after "done") and writes OUT.json: the
window (time.perf_counter(), CLOCK_MONOTONIC on Linux: the parent's clock too) and one record per
request, [kind, index, began, seconds, status, studies, issues, error], kind "search" (index: the
patient) or "direct" (index: the archive).

Two user classes:
  Search  spec["users"] users, each constant_throughput(rate / users): spec["rate"] searches/s in all,
          started at staggered phases (user k first at k / rate s) so arrivals are evenly spaced, the
          patients taken in turn from one counter;
  Direct  one user per archive (fixed_count), constant_throughput(spec["direct_rate"]): the archive's
          own QIDO-RS /studies request, exactly as the facade sends it, through the same proxy.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any, ClassVar

import gevent
import orjson
from locust import FastHttpUser, constant_throughput, task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment

SPEC: dict[str, Any] = {}
RECORDS: list[list[Any]] = []
ISSUES_KEPT = 3


def summary(body: bytes) -> tuple[int, list[str]]:
    """(ImagingStudy entries, OperationOutcome issue texts) of a searchset."""
    doc = orjson.loads(body)
    studies, issues = 0, []
    for entry in doc.get("entry", ()):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "ImagingStudy":
            studies += 1
        elif resource.get("resourceType") == "OperationOutcome":
            issues += [f"{i.get('code', '')}: {i.get('diagnostics', '')}" for i in resource.get("issue", ())]
    return studies, issues


def failure_text(reply: Any) -> str:
    """The transport error of a failed request, else the start of its body."""
    error = getattr(reply, "error", None)
    if error is not None:
        return repr(error)
    try:
        return (reply.text or "")[:200]
    except Exception:  # an undecodable body says nothing more than its status
        return ""


class Search(FastHttpUser):
    host = "http://127.0.0.1"  # replaced by configure()
    started: ClassVar[int] = 0
    arrivals: ClassVar[itertools.count[int]] = itertools.count()

    def on_start(self) -> None:
        phase = Search.started / SPEC["rate"]
        Search.started += 1
        gevent.sleep(phase)

    @task
    def search(self) -> None:
        patient = next(Search.arrivals) % len(SPEC["searches"])
        target = SPEC["searches"][patient]
        issues: list[str]
        status, studies, issues, error = 0, -1, [], ""
        began = time.perf_counter()
        with self.client.get(
            target["path"], headers=SPEC["search_headers"], name="facade search", catch_response=True
        ) as reply:
            seconds = time.perf_counter() - began
            status = reply.status_code or 0
            try:
                if status == 200:
                    studies, issues = summary(reply.content or b"")
                else:
                    error = failure_text(reply)
            except ValueError as exc:
                error = f"unreadable body: {exc}"
            if status != 200 or error or issues or studies != target["studies"]:
                reply.failure(f"HTTP {status}, {studies} studies, {issues[:1]} {error}")
            else:
                reply.success()
        RECORDS.append(["search", patient, began, seconds, status, studies, issues[:ISSUES_KEPT], error])


class Direct(FastHttpUser):
    host = "http://127.0.0.1"  # each user talks to its archive's proxy (on_start)
    fixed_count = 0  # configure(): one per archive
    started: ClassVar[int] = 0

    def on_start(self) -> None:
        self.archive = Direct.started
        Direct.started += 1
        archive = SPEC["direct"][self.archive]
        self.client = FastHttpSession(
            base_url=archive["base"],
            request_event=self.environment.events.request,
            user=self,
            network_timeout=SPEC["timeout"],
            connection_timeout=SPEC["timeout"],
        )
        self.turn = itertools.count()
        gevent.sleep(self.archive / (len(SPEC["direct"]) * SPEC["direct_rate"]))

    @task
    def studies(self) -> None:
        archive = SPEC["direct"][self.archive]
        patient = next(self.turn) % len(archive["paths"])
        status, count, error = 0, -1, ""
        began = time.perf_counter()
        with self.client.get(
            archive["paths"][patient], headers=archive["headers"], name=f"direct {self.archive}", catch_response=True
        ) as reply:
            seconds = time.perf_counter() - began
            status = reply.status_code or 0
            try:
                if status == 200:
                    count = len(orjson.loads(reply.content or b"[]"))
                else:
                    error = failure_text(reply)
            except ValueError as exc:
                error = f"unreadable body: {exc}"
            if status != 200 or error or count != archive["studies"][patient]:
                reply.failure(f"HTTP {status}, {count} studies {error}")
            else:
                reply.success()
        RECORDS.append(["direct", self.archive, began, seconds, status, count, [], error])


def configure(spec: dict[str, Any]) -> None:
    SPEC.update(spec)
    Search.host = spec["origin"]
    Search.wait_time = constant_throughput(spec["rate"] / spec["users"])
    Search.network_timeout = Search.connection_timeout = spec["timeout"]
    Direct.fixed_count = len(spec["direct"])
    Direct.wait_time = constant_throughput(spec["direct_rate"])


def main() -> None:
    spec_path, out_path = sys.argv[1:3]
    with open(spec_path, encoding="utf-8") as handle:
        configure(json.load(handle))
    env = Environment(user_classes=[Search, Direct], stop_timeout=SPEC["timeout"] + 5)
    runner = env.create_local_runner()
    print("ready", flush=True)
    sys.stdin.readline()
    users = SPEC["users"] + len(SPEC["direct"])
    t0 = time.perf_counter()
    runner.start(users, spawn_rate=users)
    gevent.sleep(max(0.0, t0 + SPEC["duration"] - time.perf_counter()))
    t1 = time.perf_counter()
    print("done", flush=True)
    runner.stop()  # graceful: a running request finishes (stop_timeout), a waiting user starts none
    drained = time.perf_counter()
    runner.quit()
    total = env.stats.total
    out = {
        "t0": t0,
        "t1": t1,
        "drained": drained,
        "records": RECORDS,
        "locust": {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "cpu_warning": bool(getattr(runner, "cpu_warning_emitted", False)),
        },
    }
    with open(out_path, "wb") as handle:
        handle.write(orjson.dumps(out))


if __name__ == "__main__":
    main()

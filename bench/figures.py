#!/usr/bin/env python3
"""Measures the figures of docs/PERFORMANCE.md on this machine, each beside its ceiling.

Every scenario of the performance document runs against a release build of the server (a fresh
database and a fresh server per run, on a free loopback port) and against the bare ceiling
server of mrm-bench (`mrm-bench ceiling-server`), back to back, several times, the two in turn
first so neither always follows the other's load; never both at once. It prints one Markdown
row per scenario: the project's median, the ceiling's median and the median of the run-by-run
ratios, and the machine it ran on. Every run's JSON line is kept in --out.

Usage (from the repository root, nothing else running):

    cargo build --release --workspace
    python3 bench/figures.py --runs 3 --out target/figures.jsonl

Only the Python standard library is used. The PostgreSQL rows need PostgreSQL 13 or later that
accepts `postgres://postgres@127.0.0.1:5432` (a database per run is created and dropped); leave
them out with --backends sqlite.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target", "release", "mrm-chat")
BENCH = os.path.join(ROOT, "target", "release", "mrm-bench")
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgres")
# Longest a single mrm-bench run may take (setup of 5,000 accounts included).
BENCH_TIMEOUT = 1800

# The server's defaults throttle a benchmark (bench/README.md, "Server settings"); the queue is
# pinned to the default the ceiling uses too. Nothing else is taken from the caller's
# environment, so a row measures what it says.
BENCH_ENV = {
    "MRM_MESSAGES_PER_SECOND": "1000000",
    "MRM_SEARCHES_PER_MINUTE": "1000000",
    "MRM_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "MRM_PASSWORD_ATTEMPTS_PER_MINUTE": "100000",
    "MRM_MAX_SOCKETS_PER_USER": "1000000",
    "MRM_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
    "MRM_WS_QUEUE": "256",
    "RUST_LOG": "warn",
}
KEPT_ENV = ("PATH", "HOME", "LANG", "TMPDIR")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine():
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def psql(sql):
    done = subprocess.run(["psql", PG_ADMIN, "-qc", sql], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")


def tail(path, lines=20):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Server:
    """One `mrm-chat serve` on a fresh database, stopped (and its database dropped) on exit."""

    def __init__(self, backend):
        self.backend = backend
        self.dir = tempfile.mkdtemp(prefix="mrm-figures-")
        self.port = free_port()
        self.db = None
        self.process = None
        self.log = None
        try:
            self.start()
        except BaseException:
            self.stop(keep_log=True)
            raise

    def start(self):
        env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
        env.update(BENCH_ENV)
        env["MRM_BIND"] = f"127.0.0.1:{self.port}"
        if self.backend == "postgres":
            self.db = f"mrm_figures_{os.getpid()}_{self.port}"
            psql(f'CREATE DATABASE "{self.db}"')
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.db}"
        else:
            env["DATABASE_URL"] = "sqlite://mrm-chat.sqlite3"
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.process = subprocess.Popen(
            [SERVER, "serve"], cwd=self.dir, env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{tail(self.log.name)}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    # Ours, not another process that took the port first.
                    if r.status == 200 and self.process.poll() is None:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{tail(self.log.name)}")
            time.sleep(0.05)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self, keep_log=False):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log:
            self.log.close()
        if self.db:
            try:
                psql(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            except RuntimeError as err:
                print(f"could not drop {self.db}: {err}", file=sys.stderr)
        if keep_log:
            print(f"the server's files are kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        self.stop(keep_log=kind is not None)


class Ceiling:
    """`mrm-bench ceiling-server --kind ws|http`, stopped on exit."""

    def __init__(self, kind):
        self.backend = "ceiling"
        self.process = subprocess.Popen(
            [BENCH, "ceiling-server", "--kind", kind, "--bind", "127.0.0.1:0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.process.stdout.readline().strip()
        if not line:
            self.stop()
            raise RuntimeError("the ceiling server did not start")
        self.url = f"http://{line}"

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()


def bench(server, args, out):
    """Runs mrm-bench against the server; returns its JSON result."""
    command = [BENCH, *args, "--target", server.url]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BENCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(command)} took over {BENCH_TIMEOUT} s")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("   ", server.backend, done.stderr.strip().splitlines()[-1], file=sys.stderr)
    out.write(json.dumps({"backend": server.backend, "args": args, "result": result}) + "\n")
    out.flush()
    return result


def pairs(backend, kind, args, count, out):
    """`count` runs of the project beside `count` of the ceiling, alternating which goes first."""
    results = []
    for n in range(count):
        print(f"  {backend} {' '.join(args)} (run {n + 1} of {count})", file=sys.stderr)
        order = ("project", "ceiling") if n % 2 == 0 else ("ceiling", "project")
        pair = {}
        for side in order:
            if side == "project":
                with Server(backend) as server:
                    pair[side] = bench(server, args, out)
            else:
                with Ceiling(kind) as ceiling:
                    pair[side] = bench(ceiling, args, out)
        results.append(pair)
    return results


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit="", decimals=0):
    if value is None:
        return "—"
    if decimals:
        return f"{value:,.{decimals}f}{unit}"
    return f"{value:,.0f}{unit}"


def troubles(results, side):
    """What went wrong on one side, summed over the runs ("" when nothing did)."""
    fields = ("lost", "closed_4008", "duplicates", "out_of_order", "error_count",
              "missed_after_failure", "rejected", "unaccounted")
    found = []
    for field in fields:
        total = sum(r[side].get(field) or 0 for r in results)
        if total:
            found.append(f"{field} {total}")
    if any(r[side].get("drained") is False for r in results):
        found.append("drain timed out")
    return f"{side}: " + ", ".join(found) if found else ""


def throughput_row(backend, name, unit, results, field, extra=""):
    ratios = [r["project"][field] / r["ceiling"][field]
              for r in results if r["ceiling"].get(field)]
    notes = "; ".join(n for n in (extra, troubles(results, "project"),
                                  troubles(results, "ceiling")) if n) or "nothing lost"
    return (backend, name, unit, fmt(median([r["project"][field] for r in results])),
            fmt(median([r["ceiling"][field] for r in results])),
            fmt(median(ratios) * 100 if ratios else None, " %"), notes)


def p99(result):
    return result["latency"]["p99_us"] / 1000


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, choices=range(1, 21), metavar="N")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "figures.jsonl"))
    parser.add_argument(
        "--large-room",
        action="store_true",
        help="also the 5,000-member room at 50 messages/s, once, on SQLite (minutes of setup)",
    )
    options = parser.parse_args()
    backends = [b.strip() for b in options.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in BACKENDS:
            sys.exit(f"--backends: {backend!r} is not one of {', '.join(BACKENDS)}")
    for binary in (SERVER, BENCH):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run cargo build --release --workspace first")
    rows = []
    try:
        with open(options.out, "a") as out:
            for backend in backends:
                ten = ["fanout", "--chats", "10", "--members", "10", "--duration", "8"]
                flat = pairs(backend, "ws", ten, options.runs, out)
                rows.append(throughput_row(
                    backend, "fanout 10 × 10, flat out", "delivered/s", flat,
                    "delivered_per_sec",
                    f"p99 {fmt(median([p99(r['project']) for r in flat]), ' ms', 1)} "
                    f"(ceiling {fmt(median([p99(r['ceiling']) for r in flat]), ' ms', 1)})"))
                rate = median([r["project"]["sent_per_sec"] for r in flat]) / 2
                half = pairs(backend, "ws", ten + ["--rate", f"{rate:.0f}"], options.runs, out)
                rows.append((backend, f"fanout 10 × 10, open loop at half the flat-out rate "
                             f"({rate:,.0f} msg/s)", "p99",
                             fmt(median([p99(r["project"]) for r in half]), " ms", 1),
                             fmt(median([p99(r["ceiling"]) for r in half]), " ms", 1), "—",
                             "; ".join(n for n in (troubles(half, "project"),
                                                   troubles(half, "ceiling")) if n)
                             or "nothing lost"))
                rest = pairs(backend, "http",
                             ["rest", "--clients", "32", "--duration", "8"], options.runs, out)
                rows.append(throughput_row(backend, "rest, 32 clients (send + history)",
                                           "requests/s", rest, "requests_per_sec"))
                room = pairs(backend, "ws", ["fanout", "--chats", "1", "--members", "1000",
                                             "--senders", "20", "--duration", "8"],
                             options.runs, out)
                rows.append(throughput_row(
                    backend, "fanout 1 × 1,000, 20 senders, flat out, default queue (256)",
                    "delivered/s", room, "delivered_per_sec"))
            if options.large_room:
                args = ["fanout", "--chats", "1", "--members", "5000", "--senders", "50",
                        "--rate", "50", "--duration", "20", "--connect-first",
                        "--setup-concurrency", "16", "--source-ips", "127.0.0.2,127.0.0.3"]
                with Server("sqlite") as server:
                    big = {"project": bench(server, args, out)}
                rows.append(("sqlite", "fanout 1 × 5,000 at 50 msg/s (1 run)", "delivered/s",
                             fmt(big["project"]["delivered_per_sec"]), "—", "—",
                             f"p99 {fmt(p99(big['project']), ' ms', 1)}; "
                             + (troubles([big], "project") or "nothing lost")))
    except RuntimeError as err:
        sys.exit(f"figures.py: {err}")
    print(f"\nMachine: {machine()}; {options.runs} runs per row unless it says otherwise; "
          f"medians; the ratio is the median of the run-by-run ratios; runs in {options.out}\n")
    print("| backend | scenario | unit | project | ceiling | ratio | notes |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

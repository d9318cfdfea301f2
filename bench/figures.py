#!/usr/bin/env python3
"""Measures the figures of docs/PERFORMANCE.md on this machine, each beside its ceiling.

Runs every scenario of the performance document against a release build of the server (a fresh
database and a fresh server per run, on a free loopback port) and against the bare ceiling that
mrm-bench starts in the same run, several times, and prints one Markdown row per scenario with
the medians, the ceiling and their ratio, plus the machine it ran on. Every run's JSON line is
kept in --out, so a figure can be traced to its runs.

Usage (from the repository root, nothing else running):

    cargo build --release --workspace
    python3 bench/figures.py --runs 3 --out target/figures.jsonl

Only the Python standard library is used. PostgreSQL rows need a server that accepts
`postgres://postgres@127.0.0.1:5432` (a database per run is created and dropped); leave them
out with --backends sqlite.
"""

import argparse
import json
import os
import platform
import shutil
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

# The server's defaults throttle a benchmark (bench/README.md, "Server settings").
BENCH_ENV = {
    "MRM_MESSAGES_PER_SECOND": "1000000",
    "MRM_SEARCHES_PER_MINUTE": "1000000",
    "MRM_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "MRM_PASSWORD_ATTEMPTS_PER_MINUTE": "100000",
    "MRM_MAX_SOCKETS_PER_USER": "1000000",
    "MRM_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
    "RUST_LOG": "warn",
}


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
    subprocess.run(["psql", PG_ADMIN, "-qc", sql], check=True, capture_output=True)


class Server:
    """One `mrm-chat serve` on a fresh database, stopped on exit."""

    def __init__(self, backend, extra_env):
        self.backend = backend
        self.dir = tempfile.mkdtemp(prefix="mrm-figures-")
        self.port = free_port()
        self.db = None
        env = dict(os.environ, **BENCH_ENV, **extra_env)
        env["MRM_BIND"] = f"127.0.0.1:{self.port}"
        if backend == "postgres":
            self.db = f"mrm_figures_{os.getpid()}_{self.port}"
            psql(f'CREATE DATABASE "{self.db}"')
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.db}"
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.process = subprocess.Popen(
            [SERVER, "serve"], cwd=self.dir, env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"the server did not start; see {self.dir}/server.log")
            time.sleep(0.05)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        if self.db:
            psql(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()


def bench(server, args, out):
    """Runs mrm-bench against the server; returns its JSON result."""
    command = [BENCH, *args, "--target", server.url]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("   ", done.stderr.strip().splitlines()[-1], file=sys.stderr)
    out.write(json.dumps({"backend": server.backend, "args": args, "result": result}) + "\n")
    out.flush()
    return result


def runs(backend, args, count, out, extra_env=None):
    results = []
    for n in range(count):
        print(f"  {backend} {' '.join(args)} (run {n + 1} of {count})", file=sys.stderr)
        with Server(backend, extra_env or {}) as server:
            results.append(bench(server, args, out))
    return results


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit=""):
    if value is None:
        return "—"
    if isinstance(value, float) and value < 10:
        return f"{value:.2f}{unit}"
    return f"{value:,.0f}{unit}"


def losses(results):
    lost = sum(r.get("lost", 0) for r in results)
    closes = sum(r.get("closed_4008", 0) for r in results)
    return f"lost {lost}, 4008 closes {closes}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "figures.jsonl"))
    parser.add_argument(
        "--large-room",
        action="store_true",
        help="also the 5,000-member room at 50 messages/s (minutes of setup: 5,000 accounts)",
    )
    options = parser.parse_args()
    for binary in (SERVER, BENCH):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run cargo build --release --workspace first")
    rows = []
    with open(options.out, "a") as out:
        for backend in options.backends.split(","):
            flat = runs(backend, ["fanout", "--chats", "10", "--members", "10",
                                  "--duration", "8", "--ceiling"], options.runs, out)
            rate = median([r["sent_per_sec"] for r in flat]) / 2
            rows.append((backend, "fanout 10 × 10, flat out", "delivered/s",
                         median([r["delivered_per_sec"] for r in flat]),
                         median([r["ceiling"]["delivered_per_sec"] for r in flat]),
                         median([r["ceiling"]["ratio"] for r in flat]),
                         f"p99 {fmt(median([r['latency']['p99_us'] for r in flat]) / 1000)} ms; "
                         + losses(flat)))
            half = runs(backend, ["fanout", "--chats", "10", "--members", "10", "--duration", "8",
                                  "--rate", f"{rate:.0f}", "--ceiling"], options.runs, out)
            rows.append((backend, f"fanout 10 × 10, open loop at half that ({rate:,.0f} msg/s)",
                         "p99 ms", median([r["latency"]["p99_us"] / 1000 for r in half]),
                         median([r["ceiling"]["latency"]["p99_us"] / 1000 for r in half]), None,
                         losses(half)))
            rest = runs(backend, ["rest", "--clients", "32", "--duration", "8", "--ceiling"],
                        options.runs, out)
            rows.append((backend, "rest, 32 clients (send + history)", "requests/s",
                         median([r["requests_per_sec"] for r in rest]),
                         median([r["ceiling"]["requests_per_sec"] for r in rest]),
                         median([r["ceiling"]["ratio"] for r in rest]), ""))
            room = runs(backend, ["fanout", "--chats", "1", "--members", "1000", "--senders", "20",
                                  "--duration", "8", "--ceiling"], options.runs, out)
            rows.append((backend, "fanout 1 × 1,000, 20 senders, default queue", "delivered/s",
                         median([r["delivered_per_sec"] for r in room]),
                         median([r["ceiling"]["delivered_per_sec"] for r in room]),
                         median([r["ceiling"]["ratio"] for r in room]), losses(room)))
        if options.large_room:
            big = runs("sqlite", ["fanout", "--chats", "1", "--members", "5000", "--senders", "50",
                                  "--rate", "50", "--duration", "20", "--connect-first",
                                  "--setup-concurrency", "16"], 1, out)
            rows.append(("sqlite", "fanout 1 × 5,000 at 50 msg/s", "delivered/s",
                         big[0]["delivered_per_sec"], None, None,
                         f"p99 {fmt(big[0]['latency']['p99_us'] / 1000)} ms; " + losses(big)))
    print(f"\nMachine: {machine()}; {options.runs} runs per row, medians; runs in {options.out}\n")
    print("| backend | scenario | unit | project | ceiling | ratio | notes |")
    print("|---|---|---|---|---|---|---|")
    for backend, name, unit, project, ceiling, ratio, notes in rows:
        print(f"| {backend} | {name} | {unit} | {fmt(project)} | {fmt(ceiling)} | "
              f"{fmt(ratio * 100, ' %') if ratio is not None else '—'} | {notes} |")


if __name__ == "__main__":
    main()

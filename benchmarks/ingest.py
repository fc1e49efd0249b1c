"""Ingest benchmark: events per second and peak memory of `cowrie-loader` at scale.

Builds a large input at run time from the shared real logs: each copy of each file gets
fresh session ids (and uuids), so every event is new to the database. Then runs the
loader in a child process on SQLite and on PostgreSQL and reports wall time, events per
second and the child's peak resident memory.

    uv run python benchmarks/ingest.py --events 1000000
    uv run python benchmarks/ingest.py --events 200000 --only postgresql

PostgreSQL: a database named by --pg-db is dropped and created on --pg-url's server.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
SHARED_LOGS = ROOT.parent / "shared" / "data" / "cowrie-logs"
BIN = Path(sys.executable).parent


def source_lines() -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(SHARED_LOGS.rglob("cowrie*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            lines.extend(line.rstrip(b"\n") for line in handle if line.endswith(b"\n"))
    return lines


def build_input(target: Path, events: int) -> int:
    """Write at least ``events`` events (whole copies of the shared logs) to ``target``."""
    base = source_lines()
    parsed = [orjson.loads(line) for line in base]
    written, copy = 0, 0
    with open(target, "wb") as out:
        while written < events:
            for event in parsed:
                session = event.get("session")
                fresh = dict(event)
                if session is not None:
                    fresh["session"] = f"{session}-{copy:05d}"
                if "uuid" in event:
                    fresh["uuid"] = f"{event['uuid']}-{copy:05d}"
                out.write(orjson.dumps(fresh) + b"\n")
            written += len(parsed)
            copy += 1
    return written


def run_loader(url: str, path: Path, batch_size: int) -> dict[str, float | None]:
    command = [
        str(BIN / "cowrie-loader"), "ingest", str(path), "--db", url, "--json",
        "--batch-size", str(batch_size),
    ]  # fmt: skip
    env = {**os.environ, "COWRIEPROC_CONFIG": ""}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        server = ServerCpu() if url.startswith("postgresql") else None
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        # wait4 gives this child's own resource usage, so each run's peak is its own.
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if server is not None:
                server.sample()
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"loader failed ({child.returncode}): {stderr[-2000:]}")
    peak_kib = usage.ru_maxrss
    summary = json.loads(stdout)
    return {
        "events": summary["events_loaded"],
        "seconds": round(elapsed, 2),
        "events_per_second": round(summary["events_loaded"] / elapsed),
        "loader_events_per_second": summary["events_per_second"],
        "peak_rss_mib": round(peak_kib / 1024, 1),
        # The loader's own CPU time per event (user + system, all its threads): unlike
        # wall time, it hardly changes when other work shares the machine.
        "loader_cpu_us_per_event": round(
            (usage.ru_utime + usage.ru_stime) / max(summary["events_loaded"], 1) * 1e6, 1
        ),
        "server_cpu_us_per_event": (
            round(server.seconds() / max(summary["events_loaded"], 1) * 1e6, 1)
            if server is not None and server.seen
            else None
        ),
    }


def postgres_cpu_by_pid() -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL server process on this machine (Linux
    /proc; empty elsewhere or when the server runs on another host)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("postgres"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


class ServerCpu:
    """The PostgreSQL server's CPU time during a run, sampled while it runs: the backend
    serving the loader ends with it, and its time would be lost to a reading taken after.
    What a process used in its last sampling interval is lost; other work on the same
    server is counted too, so this is approximate."""

    def __init__(self) -> None:
        self.before = postgres_cpu_by_pid()
        self.seen: dict[int, float] = {}

    def sample(self) -> None:
        for pid, used in postgres_cpu_by_pid().items():
            self.seen[pid] = max(used, self.seen.get(pid, 0.0))

    def seconds(self) -> float:
        return sum(used - self.before.get(pid, 0.0) for pid, used in self.seen.items())


def fresh_pg(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--pg-db", default="cowrie_bench_ingest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cowrie-bench-") as tmp:
        data = Path(tmp) / "cowrie.json"
        written = build_input(data, args.events)
        size_mib = data.stat().st_size / 2**20
        print(f"input: {written:,} events, {size_mib:,.0f} MiB")
        results = {}
        if args.only in (None, "sqlite"):
            results["sqlite"] = run_loader(f"sqlite:///{tmp}/bench.sqlite", data, args.batch_size)
            print("sqlite", results["sqlite"], flush=True)
        if args.only in (None, "postgresql"):
            url = fresh_pg(args.pg_url, args.pg_db)
            results["postgresql"] = run_loader(url, data, args.batch_size)
            print("postgresql", results["postgresql"], flush=True)
        print(json.dumps({"input_events": written, "results": results}, indent=2))


if __name__ == "__main__":
    main()

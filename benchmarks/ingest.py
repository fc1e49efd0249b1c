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


def run_loader(url: str, path: Path, batch_size: int) -> dict[str, float]:
    command = [
        str(BIN / "cowrie-loader"), "ingest", str(path), "--db", url, "--json",
        "--batch-size", str(batch_size),
    ]  # fmt: skip
    env = {**os.environ, "COWRIEPROC_CONFIG": ""}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        # wait4 gives this child's own resource usage, so each run's peak is its own.
        _, status, usage = os.wait4(child.pid, 0)
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
        "server_cpu_us_per_event": None,
    }


def postgres_cpu_seconds() -> float | None:
    """CPU time used so far by every PostgreSQL server process on this machine (Linux
    /proc; None elsewhere or when the server runs on another host). Processes that end
    in between are lost, so other work on the same server makes this approximate."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    found = False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("postgres"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        found = True
    return total / ticks if found else None


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
            before = postgres_cpu_seconds()
            results["postgresql"] = run_loader(url, data, args.batch_size)
            after = postgres_cpu_seconds()
            if before is not None and after is not None:
                per_event = (after - before) / max(results["postgresql"]["events"], 1)
                results["postgresql"]["server_cpu_us_per_event"] = round(per_event * 1e6, 1)
            print("postgresql", results["postgresql"], flush=True)
        print(json.dumps({"input_events": written, "results": results}, indent=2))


if __name__ == "__main__":
    main()

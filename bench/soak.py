#!/usr/bin/env python3
"""A soak under steady load: `python3 bench/soak.py` (or `bench/soak`).

Starts Gatehouse (release build) on 127.0.0.1 as bench/run.py does (examples/shop,
rate limits raised, 100 users x 100 orders), drives the 90/10 mix of workload (f)
with wrk for --seconds (default 600) and reads the server's resident memory
(VmRSS) every --interval seconds. Fails if the mean over the last minute is more
than 10 % above the mean over the second minute: under a load that does not change,
memory that keeps growing is a leak or a cache without a bound. Fails too if the
server dies. Prints the samples and the verdict and writes bench/soak.json. Bounded:
one wrk run of --seconds (plus 2 s), then the server is stopped.
"""

import argparse
import collections
import datetime
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the shared helpers of bench/run.py)

MAX_GROWTH = 0.10
WORKLOAD = "f"
# The first minute is start-up: allocator arenas, SQLite's page caches and the
# token cache fill as the load arrives. The second minute is the first settled one,
# so it is the reference; the last minute is compared with it.
REFERENCE = (60, 120)
# wrk runs this much longer than --seconds, so the last sample, at --seconds, is still
# taken under load (the allocator may hand memory back soon after the load stops).
LOAD_MARGIN = 2


def drain(stream, tail):
    """Reads the server's stderr as it comes: Server pipes it and nobody else reads
    it, so in a long run a full pipe would stall the server's logging. Keeps the last
    lines to show if the server dies."""
    for line in stream:
        tail.append(line.rstrip())


def sample(pid, t):
    """From /proc, not /metrics: reading the memory adds no requests to the load."""
    return {"t_s": t, "rss_mb": bench.rss_mb(pid), "rss_anon_mb": bench.status_mb(pid, "RssAnon")}


def stop_load():
    """Ends wrk (bench.wrk starts it, through taskset, as our child) once the server is
    gone, so it does not knock on a closed port until its duration is over."""
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read() if entry.isdigit() else ""
        except OSError:
            continue
        if not stat:
            continue
        name, after = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 1:].split()
        if name == "wrk" and int(after[1]) == os.getpid():
            os.kill(int(entry), signal.SIGTERM)


def soak(process, base, lua, rows, connections, seconds, interval):
    """Runs wrk for `seconds` in a thread and samples the server's memory every
    `interval` s meanwhile (t = 0 is at rest, just before the load); returns the
    samples and wrk's figures (None if wrk failed). Stops sampling if the server dies."""
    samples = [sample(process.pid, 0)]
    outcome = {}

    def load():
        try:
            outcome["wrk"] = bench.wrk(base, lua, rows, connections, seconds + LOAD_MARGIN)
        except Exception as error:  # reported by the caller; the samples still count
            outcome["error"] = error

    thread = threading.Thread(target=load, daemon=True)
    started = time.monotonic()
    thread.start()
    for k in range(1, seconds // interval + 1):
        # Sleep to the tick rather than for `interval`, so the ticks do not drift.
        time.sleep(max(0.0, started + k * interval - time.monotonic()))
        now = sample(process.pid, k * interval)
        if process.poll() is not None or now["rss_mb"] is None:
            stop_load()
            break
        samples.append(now)
        if k * interval // 60 != (k - 1) * interval // 60:  # a sign of life once a minute
            print(f"  {now['t_s']:5d} s  {now['rss_mb']:7.1f} MB", flush=True)
    # bench.wrk gives wrk its duration plus 60 s before killing it.
    thread.join(LOAD_MARGIN + 90)
    if "error" in outcome:
        print(f"wrk failed: {outcome['error']}", flush=True)
    return samples, outcome.get("wrk")


def window_mean(samples, start, end):
    values = [s["rss_mb"] for s in samples if start <= s["t_s"] <= end]
    return (statistics.mean(values), len(values)) if values else (None, 0)


def judge(samples, seconds, interval):
    """The growth from the second minute's mean RSS to the last minute's, and what is
    wrong with the memory (an empty list if nothing)."""
    # Sampling stops early only when the server is gone; half a window says nothing.
    if samples[-1]["t_s"] != seconds // interval * interval:
        return None, [f"the samples stop at {samples[-1]['t_s']} s of {seconds}"]
    reference, _ = window_mean(samples, *REFERENCE)
    last, _ = window_mean(samples, seconds - 60, seconds)
    growth = last / reference - 1
    if growth > MAX_GROWTH:
        return growth, [f"the last minute's RSS is {growth:+.1%} over the second minute's (limit {MAX_GROWTH:+.0%})"]
    return growth, []


def table(samples, last_start):
    lines = ["", "   t s   RSS MB  anon MB  window", "  ----  -------  -------  ------"]
    for s in samples:
        window = " ".join(name for name, inside in (
            ("2nd-min", REFERENCE[0] <= s["t_s"] <= REFERENCE[1]),
            ("last-min", s["t_s"] >= last_start),
            ("rest", s["t_s"] == 0),
        ) if inside)
        anon = f"{s['rss_anon_mb']:7.1f}" if s["rss_anon_mb"] is not None else "      -"
        lines.append(f"  {s['t_s']:4d}  {s['rss_mb']:7.1f}  {anon}  {window}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=600, help="how long the load runs (at least 120; default 600)")
    parser.add_argument("--interval", type=int, default=10, help="seconds between memory samples (1 to 60; default 10)")
    parser.add_argument("--no-build", action="store_true", help="use the release binary already built instead of running cargo")
    args = parser.parse_args()
    # Both windows need their samples: the second minute must be over, and every
    # 60-second window must hold a tick.
    if args.seconds < REFERENCE[1]:
        parser.error(f"--seconds must be at least {REFERENCE[1]}: the second minute is the reference")
    if not 1 <= args.interval <= 60:
        parser.error("--interval must be between 1 and 60")
    # The tokens are signed in once, before the load, and must outlive it (the
    # configuration allows a lifetime of up to 7 days).
    token_ttl = args.seconds + 3600
    if token_ttl > 604_800:
        parser.error("--seconds must be at most 601,200 (the longest token lifetime, less an hour)")
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "gatehouse-server"], cwd=bench.ROOT, check=True)
    binary = os.path.join(bench.TARGET, "release", "gatehouse")
    if not os.path.exists(binary):
        sys.exit(f"{binary} is missing: run without --no-build, or cargo build --release -p gatehouse-server")

    name, connections, request, _ = next(w for w in bench.workloads("gatehouse") if w[0].split()[0] == WORKLOAD)
    lua = bench.LUA.replace("{{REQUEST}}", request).replace("{{RESPONSE}}", "")
    work = tempfile.mkdtemp(prefix="gatehouse-soak-")
    gatehouse = None
    try:
        gatehouse = bench.Gatehouse(work, bench.gatehouse_config(f"access_token_ttl_secs = {token_ttl}\n"))
        process = gatehouse.server.process
        tail = collections.deque(maxlen=20)
        stderr_lines = threading.Thread(target=drain, args=(process.stderr, tail), daemon=True)
        stderr_lines.start()
        print("seeding gatehouse", flush=True)
        rows = bench.seeded_rows(gatehouse, work)
        print(f"soak: {name}, {connections} connections, {args.seconds} s, memory every {args.interval} s", flush=True)
        samples, load = soak(process, gatehouse.base, lua, rows, connections, args.seconds, args.interval)
        exit_code = process.poll()
        peak = gatehouse.server.stop()
        stderr_lines.join(5)
        # How much the load wrote: the table grows all along (10 % of requests are inserts).
        db = sqlite3.connect(os.path.join(gatehouse.data, "gatehouse.db"))
        orders_after, = db.execute("SELECT COUNT(*) FROM orders").fetchone()
        db.close()
    finally:
        if gatehouse is not None:
            gatehouse.server.stop()  # a second stop is harmless; this one is for errors
        shutil.rmtree(work, ignore_errors=True)

    last_start = args.seconds - 60
    reference, reference_count = window_mean(samples, *REFERENCE)
    last, last_count = window_mean(samples, last_start, args.seconds)
    growth, problems = judge(samples, args.seconds, args.interval)
    if exit_code is not None:
        problems.append(f"the server exited (code {exit_code}) during the load")
    if load is None:
        problems.append("wrk did not finish")

    print(table(samples, last_start))
    print()
    if reference is not None:
        print(f"second minute ({REFERENCE[0]}-{REFERENCE[1]} s): {reference:.1f} MB, mean of {reference_count} samples")
    if last is not None:
        print(f"last minute ({last_start}-{args.seconds} s): {last:.1f} MB, mean of {last_count} samples")
    if load:
        ms = lambda value: f"{value:.2f} ms" if value is not None else "-"
        print(f"load: {load['rps']:.0f} req/s, p50 {ms(load['p50_ms'])}, p99 {ms(load['p99_ms'])}, non-2xx {load['non_2xx']}")
        if load["non_2xx"]:
            print("note: some answers were not 2xx (a limit tripped, or a token expired?); the memory verdict still stands")
    print(f"orders after the run: {orders_after:,} (seeded {bench.USERS * bench.ORDERS_PER_USER:,})")
    if exit_code is not None and tail:
        print("the server's last lines:\n  " + "\n  ".join(tail))

    verdict = "fail" if problems else "pass"
    report = {
        "date": datetime.date.today().isoformat(),
        "settings": {
            "seconds": args.seconds,
            "interval_s": args.interval,
            "workload": name,
            "connections": connections,
            "users": bench.USERS,
            "orders_per_user": bench.ORDERS_PER_USER,
            "reference_window_s": list(REFERENCE),
            "last_window_s": [last_start, args.seconds],
            "max_growth": MAX_GROWTH,
            "server_core": bench.SERVER_CORE,
            "load_core": bench.LOAD_CORE,
            "version": subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip(),
        },
        "requests_per_s": load["rps"] if load else None,
        "load": load,
        "second_minute_rss_mb": round(reference, 1) if reference is not None else None,
        "last_minute_rss_mb": round(last, 1) if last is not None else None,
        "growth": round(growth, 4) if growth is not None else None,
        "peak_rss_mb": round(peak, 1) if peak is not None else None,
        "orders_after": orders_after,
        "verdict": verdict,
        "problems": problems,
        "samples": [{k: round(v, 1) if isinstance(v, float) else v for k, v in s.items()} for s in samples],
    }
    with open(os.path.join(bench.BENCH, "soak.json"), "w") as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    if problems:
        print("FAILED: " + "; ".join(problems))
        sys.exit(1)
    print(f"PASSED: the last minute is {growth:+.1%} against the second (limit {MAX_GROWTH:+.0%})")


if __name__ == "__main__":
    main()

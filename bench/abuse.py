#!/usr/bin/env python3
"""Sign-in abuse under load: `python3 bench/abuse.py` (or `bench/abuse`).

Starts Gatehouse (release build) on 127.0.0.1 behind a pretend proxy (127.0.0.1 is
trusted, so X-Forwarded-For names the client), creates one account, measures a read
endpoint with wrk at rest, then measures it again while 2,000 sign-in attempts hit
that account from 500 addresses. After the first 429 (the account lock), every
tenth attempt carries the right password: none may be accepted. Prints the figures
and writes them to bench/abuse.json. Bounded: 2,000 attempts, two 10-second wrk runs.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the shared helpers of bench/run.py)

ATTEMPTS = 2000
ADDRESSES = 500
SECONDS = 10
CONNECTIONS = 8
EMAIL = "target@example.com"


def attempt(base, publishable, password, address):
    body = json.dumps({"email": EMAIL, "password": password}).encode()
    request = urllib.request.Request(
        f"{base}/auth/v1/token?grant_type=password", data=body, method="POST",
        headers={"content-type": "application/json", "apikey": publishable, "x-forwarded-for": address},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        if os.environ.get("ABUSE_DEBUG"):
            print(error.code, error.read()[:200], flush=True)
        return error.code


def attack(base, publishable, seconds):
    """2,000 attempts spread over `seconds`; the right password joins after the lock."""
    locked = threading.Event()
    results = []
    lock = threading.Lock()

    def one(i):
        delay = i * seconds / ATTEMPTS - (time.time() - started)
        if delay > 0:
            time.sleep(delay)
        right = locked.is_set() and i % 10 == 0
        status = attempt(base, publishable, bench.PASSWORD if right else f"guess {i}", f"198.51.{i % ADDRESSES // 250}.{i % 250 + 1}")
        if status == 429:
            locked.set()
        with lock:
            results.append((right, status))

    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(ATTEMPTS)))
    return results


def main():
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gatehouse-server"], cwd=bench.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="gatehouse-abuse-")
    try:
        gatehouse = bench.Gatehouse(work, '[server]\ntrusted_proxies = ["127.0.0.1"]\n'
                                    '[rate_limits]\nreads = { limit = 1000000, window_secs = 60 }\n')
        server, base, publishable = gatehouse.server, gatehouse.base, gatehouse.publishable
        admin = {"apikey": gatehouse.secret, "authorization": f"Bearer {gatehouse.secret}"}
        bench.http("POST", f"{base}/auth/v1/admin/users", {"email": EMAIL, "password": bench.PASSWORD, "email_confirm": True}, admin)
        bench.http("POST", f"{base}/auth/v1/admin/users", {"email": "reader@example.com", "password": bench.PASSWORD, "email_confirm": True}, admin)
        token = bench.http("POST", f"{base}/auth/v1/token?grant_type=password", {"email": "reader@example.com", "password": bench.PASSWORD}, {"apikey": publishable, "x-forwarded-for": "203.0.113.1"})["access_token"]
        rows = os.path.join(work, "rows")
        with open(rows, "w") as out:
            out.write("\t".join([token, "-", "-", "-", publishable]) + "\n")
        read = 'return wrk.format("GET", "/rest/v1/orders?select=*&order=created_at.desc&limit=20", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1]})'
        lua = bench.LUA.replace("{{REQUEST}}", read).replace("{{RESPONSE}}", "")
        idle = bench.wrk(base, lua, rows, CONNECTIONS, SECONDS)
        print(f"idle:   {idle['rps']:.0f} req/s, p99 {idle['p99_ms']:.2f} ms", flush=True)
        outcome = {}
        attacker = threading.Thread(target=lambda: outcome.update(results=attack(base, publishable, SECONDS - 1)))
        attacker.start()
        loaded = bench.wrk(base, lua, rows, CONNECTIONS, SECONDS)
        attacker.join()
        print(f"attack: {loaded['rps']:.0f} req/s, p99 {loaded['p99_ms']:.2f} ms", flush=True)
        results = outcome["results"]
        statuses = {}
        for _, status in results:
            statuses[status] = statuses.get(status, 0) + 1
        right_after_lock = [status for right, status in results if right]
        accepted_after_lock = sum(1 for status in right_after_lock if status == 200)
        report = {
            "date": time.strftime("%Y-%m-%d"),
            "attempts": len(results),
            "addresses": ADDRESSES,
            "statuses": statuses,
            "right_password_after_lock": len(right_after_lock),
            "accepted_after_lock": accepted_after_lock,
            "read_idle": idle,
            "read_under_attack": loaded,
            "p99_ratio": (loaded["p99_ms"] or 0) / (idle["p99_ms"] or 1),
            "peak_rss_mb": server.stop(),
        }
        with open(os.path.join(bench.BENCH, "abuse.json"), "w") as out:
            json.dump(report, out, indent=2)
        print(json.dumps({k: v for k, v in report.items() if k not in ("read_idle", "read_under_attack")}, indent=2))
        if accepted_after_lock or report["p99_ratio"] >= 5:
            sys.exit("FAILED: a guess was accepted after the lock, or reads slowed more than 5x")
    finally:
        if os.environ.get("ABUSE_DEBUG"):
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

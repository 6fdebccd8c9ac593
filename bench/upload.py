#!/usr/bin/env python3
"""A 1 GiB object through Gatehouse: `python3 bench/upload.py` (or `bench/upload`).

Starts Gatehouse (release build) on 127.0.0.1 with local-disk storage, streams a
1 GiB body (chunked, generated on the fly, so the client holds 1 MiB) into one
object, downloads it back and checks its SHA-256, sampling the server's resident
memory all along. The baseline, in the same run on the same disk: writing the same
bytes to a file with one fsync, as the storage layer must. Prints the figures and
writes them to bench/upload.json. Bounded: one upload, one download, 1 GiB each.
"""

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the shared helpers of bench/run.py)

SIZE = 1 << 30
CHUNK = 1 << 20


def chunks(digest):
    block = bytearray(CHUNK)
    for i in range(SIZE // CHUNK):
        block[:8] = i.to_bytes(8, "little")  # no two chunks alike
        digest.update(block)
        yield bytes(block)


class Sampler(threading.Thread):
    """The server's resident memory every 20 ms; `peak` is the highest seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, bench.rss_mb(self.pid))
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.join()
        return self.peak


def baseline_write(folder):
    """MB/s of writing the same bytes to a file with one fsync."""
    path = os.path.join(folder, "baseline.bin")
    started = time.monotonic()
    with open(path, "wb") as out:
        for chunk in chunks(hashlib.sha256()):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.monotonic() - started
    os.remove(path)
    return SIZE / (1 << 20) / seconds


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gatehouse-server"], cwd=bench.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="gatehouse-upload-")
    try:
        server = bench.Gatehouse(work, "\n[storage]\nmax_object_bytes = 2147483648\n[rate_limits]\nenabled = false\n")
        pid = server.server.process.pid
        admin = {"apikey": server.secret, "authorization": f"Bearer {server.secret}"}
        bench.http("POST", f"{server.base}/storage/v1/bucket", {"id": "big"}, admin)
        idle = bench.rss_mb(pid)
        disk = baseline_write(work)

        sampler = Sampler(pid)
        sampler.start()
        digest = hashlib.sha256()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        started = time.monotonic()
        connection.request("POST", "/storage/v1/object/big/one-gib.bin", body=chunks(digest),
                           headers={**admin, "content-type": "application/octet-stream"}, encode_chunked=True)
        answer = connection.getresponse()
        body = answer.read()
        upload_seconds = time.monotonic() - started
        assert answer.status == 200, (answer.status, body)
        upload_peak = sampler.stop()

        sampler = Sampler(pid)
        sampler.start()
        started = time.monotonic()
        connection.request("GET", "/storage/v1/object/big/one-gib.bin", headers=admin)
        answer = connection.getresponse()
        back = hashlib.sha256()
        received = 0
        while block := answer.read(CHUNK):
            back.update(block)
            received += len(block)
        download_seconds = time.monotonic() - started
        download_peak = sampler.stop()
        assert answer.status == 200 and received == SIZE, (answer.status, received)
        assert back.hexdigest() == digest.hexdigest(), "the bytes came back changed"
        assert answer.getheader("etag") == f'"{digest.hexdigest()}"'
        server.server.stop()

        upload_rate = SIZE / (1 << 20) / upload_seconds
        report = {
            "object_mib": SIZE >> 20,
            "idle_rss_mb": round(idle, 1),
            "upload_peak_rss_mb": round(upload_peak, 1),
            "download_peak_rss_mb": round(download_peak, 1),
            "upload_mb_s": round(upload_rate, 1),
            "download_mb_s": round(SIZE / (1 << 20) / download_seconds, 1),
            "disk_write_mb_s": round(disk, 1),
            "upload_vs_disk_write": round(upload_rate / disk, 2),
        }
        print(json.dumps(report, indent=2))
        with open(os.path.join(bench.ROOT, "bench", "upload.json"), "w") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

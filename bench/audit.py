"""The audit log's cost (bench/audit.sh runs this): the same release binary as
two deployments on 127.0.0.1, one with the audit log (`--audit true`, the
default) and one without (`--audit false`), measured in the same run,
round by round in turn (so that drift of the machine hits both alike).

1. manifest GET: `GET /v2/<repo>/manifests/<tag>` over one keep-alive
   connection (http.client), ROUNDS rounds of GETS requests per deployment;
   each request's time, then the median, mean and p95 per deployment; and
   THREADS clients at once for CONCURRENT_SECONDS, requests per second.
2. blob push: as docker pushes a layer (POST, PATCH with the bytes, PUT
   ?digest=), ROUNDS rounds of PUSHES blobs of BLOB_KIB KiB per deployment;
   each push's time (the three requests), median, mean, p95.

Prints a markdown table with the ratios (audit on / audit off).
"""

import base64
import hashlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import boto3
from botocore.config import Config

ACCOUNT = "123456789012"
AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

BIN = os.environ["BERTH_BIN"]
ROUNDS = int(os.environ.get("ROUNDS", "10"))
GETS = int(os.environ.get("GETS", "500"))
PUSHES = int(os.environ.get("PUSHES", "30"))
BLOB_KIB = int(os.environ.get("BLOB_KIB", "256"))
THREADS = int(os.environ.get("THREADS", "4"))
CONCURRENT_SECONDS = float(os.environ.get("CONCURRENT_SECONDS", "10"))


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp, audit):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"berth-audit-{audit}.log", "wb")
        env = dict(os.environ, BERTH_ACCOUNT_ID=ACCOUNT, BERTH_ROOT_ACCESS_KEY_ID=AKID,
                   BERTH_ROOT_SECRET_ACCESS_KEY=SECRET, BERTH_LOG="warn")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(tmp / f"data-{audit}"),
             "--audit", audit],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("berth did not start")
            time.sleep(0.05)
        self.ecr = boto3.session.Session().client(
            "ecr", region_name="us-east-1", endpoint_url=self.endpoint,
            aws_access_key_id=AKID, aws_secret_access_key=SECRET,
            config=Config(retries={"max_attempts": 1}))
        token = self.ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        self.auth = "Basic " + base64.b64encode(base64.b64decode(token)).decode()
        self.ecr.create_repository(repositoryName="bench/app")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or self.conn
        h = {"Authorization": self.auth, **(headers or {})}
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, r.headers, data

    def push_blob(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        s, h, _ = self.request("POST", "/v2/bench/app/blobs/uploads/", body=b"")
        assert s == 202, s
        loc = urllib.parse.urlparse(h["Location"])
        s, h, _ = self.request("PATCH", loc.path + (f"?{loc.query}" if loc.query else ""), body=data,
                               headers={"Content-Type": "application/octet-stream"})
        assert s == 202, s
        loc = urllib.parse.urlparse(h["Location"])
        q = f"{loc.query}&" if loc.query else ""
        s, _, body = self.request("PUT", f"{loc.path}?{q}digest={digest}", body=b"")
        assert s == 201, (s, body)
        return digest

    def push_image(self):
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layer = os.urandom(1024)
        cd, ld = self.push_blob(config), self.push_blob(layer)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config), "digest": cd},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer), "digest": ld}]})
        s, _, _ = self.request("PUT", "/v2/bench/app/manifests/v1", body=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert s == 201

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def get_round(server, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s, _, _ = server.request("GET", "/v2/bench/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        times.append(time.perf_counter() - t)
        assert s == 200
    return times


def push_round(server, n):
    times = []
    for _ in range(n):
        data = os.urandom(BLOB_KIB * 1024)
        t = time.perf_counter()
        server.push_blob(data)
        times.append(time.perf_counter() - t)
    return times


def concurrent_gets(server):
    count = [0] * THREADS
    stop = time.monotonic() + CONCURRENT_SECONDS

    def worker(i):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while time.monotonic() < stop:
            s, _, _ = server.request("GET", "/v2/bench/app/manifests/v1", headers={"Accept": OCI_MANIFEST}, conn=conn)
            assert s == 200
            count[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count) / CONCURRENT_SECONDS


def summary(times):
    times = sorted(times)
    return {"median_ms": statistics.median(times) * 1000, "mean_ms": statistics.fmean(times) * 1000,
            "p95_ms": times[int(len(times) * 0.95)] * 1000}


def main():
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-audit-"))
    on, off = Server(tmp, "true"), Server(tmp, "false")
    try:
        for s in (on, off):
            s.push_image()
            get_round(s, 200)  # warm up
            push_round(s, 5)
        gets = {"on": [], "off": []}
        pushes = {"on": [], "off": []}
        for r in range(ROUNDS):
            order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
            for k, s in order:
                gets[k] += get_round(s, GETS)
            for k, s in order:
                pushes[k] += push_round(s, PUSHES)
        rps = {}
        for k, s in (("on", on), ("off", off), ("on2", on), ("off2", off)):
            rps[k] = concurrent_gets(s)
        rps_on, rps_off = (rps["on"] + rps["on2"]) / 2, (rps["off"] + rps["off2"]) / 2
        # The events really were written: the audited deployment holds them.
        trail = boto3.session.Session().client(
            "cloudtrail", region_name="us-east-1", endpoint_url=on.endpoint,
            aws_access_key_id=AKID, aws_secret_access_key=SECRET)
        names = {e["EventName"] for e in trail.lookup_events(MaxResults=50)["Events"]}
        g_on, g_off = summary(gets["on"]), summary(gets["off"])
        p_on, p_off = summary(pushes["on"]), summary(pushes["off"])
        out = {"gets": {"on": g_on, "off": g_off}, "pushes": {"on": p_on, "off": p_off},
               "concurrent_rps": {"on": rps_on, "off": rps_off}, "recent_event_names": sorted(names)}
        print(json.dumps(out, indent=1), file=sys.stderr)
        print(f"| measure (audit on vs off, {ROUNDS} rounds each) | audit on | audit off | ratio |")
        print("|---|---|---|---|")
        for label, a, b, key in [
            (f"manifest GET, median ({ROUNDS * GETS} requests)", g_on, g_off, "median_ms"),
            ("manifest GET, mean", g_on, g_off, "mean_ms"),
            ("manifest GET, p95", g_on, g_off, "p95_ms"),
            (f"blob push ({BLOB_KIB} KiB: POST+PATCH+PUT), median ({ROUNDS * PUSHES} pushes)", p_on, p_off, "median_ms"),
            ("blob push, mean", p_on, p_off, "mean_ms"),
            ("blob push, p95", p_on, p_off, "p95_ms"),
        ]:
            print(f"| {label} | {a[key]:.3f} ms | {b[key]:.3f} ms | {a[key] / b[key]:.3f}x |")
        print(f"| manifest GET, {THREADS} clients at once | {rps_on:.0f}/s | {rps_off:.0f}/s | {rps_off / rps_on:.3f}x (time per request) |")
    finally:
        on.stop()
        off.stop()


if __name__ == "__main__":
    main()

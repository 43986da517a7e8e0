#!/usr/bin/env python3
"""Helper for bench/scan.sh: Berth's image scanning against Trivy's inventory,
on 127.0.0.1, in one run (standard library, plus boto3 for the SigV4-signed
ECR calls).

  scan.py osv LAYOUT OUTDIR
      Read the dpkg status of the OCI layout LAYOUT (the debian fixture: the
      last layer that writes var/lib/dpkg/status wins) and write the bench's
      OSV data (Debian:12 records over the image's source packages) as
      osv.dev's all.zip: OUTDIR/set1.zip (the base set every scan matches
      against: BASE_SYNTHETIC synthetic records that do not affect the
      installed versions + BASE_MATCHING that do, CVSS 5.4 MEDIUM) and
      OUTDIR/set2.zip (the second import: SYNTHETIC more that do not affect +
      MATCHING new ones that do, CVSS 9.8 CRITICAL, + set1's first matching
      record re-issued as withdrawn, so a finding closes). Prints a summary.

  scan.py run --config FILE
      The benchmark proper (FILE: JSON written by scan.sh: binaries, fixture
      layouts, knobs). Writes RESULTS (JSON) and prints a table.

  scan.py bigimage BASE_LAYOUT OUTDIR MIB
      An OCI layout: BASE_LAYOUT's layers plus one gzip layer of MIB MiB of
      incompressible files (a few big ones, many small ones).
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCOUNT = "123456789012"
AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"


def log(*a):
    print("[%s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ OCI layouts

class Layout:
    """An OCI image layout with one image (ref `latest`)."""

    def __init__(self, path):
        self.path = path
        index = json.load(open(os.path.join(path, "index.json")))
        desc = index["manifests"][0]
        self.manifest_bytes = self.read(desc["digest"])
        self.manifest = json.loads(self.manifest_bytes)
        self.media_type = self.manifest.get("mediaType", desc["mediaType"])
        self.config = json.loads(self.read(self.manifest["config"]["digest"]))
        self.layers = self.manifest["layers"]

    def blob_path(self, digest):
        algo, hexd = digest.split(":", 1)
        return os.path.join(self.path, "blobs", algo, hexd)

    def read(self, digest):
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    def size(self):
        return sum(l["size"] for l in self.layers)

    def variant(self, label):
        """(config bytes, manifest bytes) of the same image with config label
        berth.bench.run=LABEL: a new config and image digest, same layers."""
        cfg = json.loads(json.dumps(self.config))
        inner = cfg.setdefault("config", {})
        labels = inner.get("Labels") or {}
        labels["berth.bench.run"] = label
        inner["Labels"] = labels
        cb = json.dumps(cfg, sort_keys=True).encode()
        m = json.loads(self.manifest_bytes)
        m["config"] = dict(m["config"], digest=sha256(cb), size=len(cb))
        mb = json.dumps(m, sort_keys=True).encode()
        return cb, mb


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------ /v2/ client

class V2:
    def __init__(self, port):
        self.port = port
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600,
                                                   blocksize=1 << 20)
        return self.conn

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            c = self._conn()
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
                return r.status, r.getheader("Location"), data
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt or hasattr(body, "read"):
                    raise
        raise AssertionError("unreachable")

    def has_blob(self, repo, digest):
        st, _, _ = self.request("HEAD", "/v2/%s/blobs/%s" % (repo, digest))
        return st == 200

    def push_blob(self, repo, digest, data=None, path=None):
        """Monolithic POST ?digest= (bytes, or a file streamed from PATH)."""
        if path is not None:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                st, _, resp = self.request(
                    "POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, digest), body=f,
                    headers={"Content-Length": str(size),
                             "Content-Type": "application/octet-stream"})
        else:
            st, _, resp = self.request(
                "POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, digest), body=data,
                headers={"Content-Length": str(len(data)),
                         "Content-Type": "application/octet-stream"})
        if st != 201:
            raise RuntimeError("blob %s: HTTP %d %s" % (digest, st, resp[:200]))

    def put_manifest(self, repo, tag, body, media_type):
        st, _, resp = self.request("PUT", "/v2/%s/manifests/%s" % (repo, tag), body=body,
                                   headers={"Content-Type": media_type})
        if st != 201:
            raise RuntimeError("manifest %s:%s: HTTP %d %s" % (repo, tag, st, resp[:300]))

    def push_layers(self, repo, layout):
        for l in layout.layers:
            if not self.has_blob(repo, l["digest"]):
                self.push_blob(repo, l["digest"], path=layout.blob_path(l["digest"]))


# ------------------------------------------------------------------ the server

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0])  # kB
    return out


class Berth:
    def __init__(self, cfg, data_dir, logfile):
        self.cfg = cfg
        self.data_dir = data_dir
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        env = dict(os.environ, BERTH_LOG="warn", BERTH_ACCOUNT_ID=ACCOUNT,
                   BERTH_ROOT_ACCESS_KEY_ID=AKID, BERTH_ROOT_SECRET_ACCESS_KEY=SECRET)
        for k in list(env):
            if k.startswith("BERTH_") and k not in ("BERTH_LOG", "BERTH_ACCOUNT_ID",
                                                    "BERTH_ROOT_ACCESS_KEY_ID",
                                                    "BERTH_ROOT_SECRET_ACCESS_KEY"):
                del env[k]
        self.env = env
        self.proc = subprocess.Popen(
            [cfg["berth"], "serve", "--listen", "127.0.0.1:%d" % self.port,
             "--data-dir", data_dir, "--auth", "none",
             "--gc-interval", "24h", "--lifecycle-interval", "24h"],
            env=env, stdout=logfile, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("berth exited at start-up (see the log)")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/")
                c.getresponse().read()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("berth did not answer within 60 s")
                time.sleep(0.05)
        # Settle: a second for start-up jobs (a copied data dir has its periodic
        # jobs scheduled already), and no GC running, before measuring.
        settle = time.time() + 1
        deadline = time.time() + 10
        while time.time() < deadline:
            m = self.metrics()
            if time.time() >= settle and m.get("berth_gc_running", 1) == 0:
                break
            time.sleep(0.05)
        self.v2 = V2(self.port)
        import boto3
        import botocore.config
        self.ecr = boto3.client(
            "ecr", endpoint_url=self.url, region_name=REGION, aws_access_key_id=AKID,
            aws_secret_access_key=SECRET,
            config=botocore.config.Config(retries={"max_attempts": 2},
                                          max_pool_connections=4))

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
        return out

    def status(self):
        return proc_status(self.pid)

    def reset_peak(self):
        """Reset VmHWM to the current RSS (Linux clear_refs 5)."""
        with open("/proc/%d/clear_refs" % self.pid, "w") as f:
            f.write("5")

    def cli(self, *args, check=True):
        r = subprocess.run([self.cfg["berth"], *args, "--data-dir", self.data_dir],
                           env=self.env, capture_output=True, text=True, timeout=1800)
        if check and r.returncode != 0:
            raise RuntimeError("berth %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                          r.stderr[-500:]))
        return r

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def scan_status(self, repo, digest):
        try:
            r = self.ecr.describe_image_scan_findings(
                repositoryName=repo, imageId={"imageDigest": digest}, maxResults=1)
        except self.ecr.exceptions.ScanNotFoundException:
            return None, None
        return r["imageScanStatus"]["status"], r

    def wait_scan(self, repo, digest, every=0.02, timeout=1800):
        deadline = time.time() + timeout
        while True:
            st, r = self.scan_status(repo, digest)
            if st not in (None, "IN_PROGRESS", "PENDING"):
                return st, r
            if time.time() > deadline:
                raise RuntimeError("scan of %s@%s not done after %d s" % (repo, digest, timeout))
            time.sleep(every)


# ------------------------------------------------------------------ OSV data

def layer_tar(layout, layer):
    """A tarfile over a layer (gzip, zstd through `zstd -dc`, or plain)."""
    mt = layer["mediaType"]
    path = layout.blob_path(layer["digest"])
    if "zstd" in mt:
        data = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
        return tarfile.open(fileobj=io.BytesIO(data), mode="r|")
    if "gzip" in mt:
        return tarfile.open(path, mode="r|gz")
    return tarfile.open(path, mode="r|")


def dpkg_sources(layout_path):
    """{source name: source version} of the installed (or unpacked) packages."""
    layout = Layout(layout_path)
    status = None
    for layer in layout.layers:
        with layer_tar(layout, layer) as t:
            for m in t:
                if m.name.lstrip("./") == "var/lib/dpkg/status" and m.isfile():
                    status = t.extractfile(m).read().decode()
    if status is None:
        raise SystemExit("no var/lib/dpkg/status in %s" % layout_path)
    sources = {}
    for stanza in status.split("\n\n"):
        f = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            f[k] = v.strip()
        if "Package" not in f or "Version" not in f:
            continue
        if f.get("Status", "").split()[-1:] not in (["installed"], ["unpacked"]):
            continue
        src, ver = f["Package"], f["Version"]
        if "Source" in f:
            m = re.match(r"^(\S+)(?:\s+\((\S+)\))?$", f["Source"])
            src = m.group(1)
            ver = m.group(2) or ver
        sources[src] = ver
    return sources


def osv_record(rid, pkg, events, modified, versions=None, severity=None, withdrawn=None):
    r = {
        "schema_version": "1.6.0",
        "id": rid,
        "modified": modified,
        "published": "2023-01-01T00:00:00Z",
        "aliases": ["CVE-2099-%s" % rid.rsplit("-", 1)[-1]],
        "summary": "berth bench record %s for %s" % (rid, pkg),
        "details": "Synthetic record written by bench/scan.py.",
        "affected": [{
            "package": {"ecosystem": "Debian:12", "name": pkg,
                        "purl": "pkg:deb/debian/%s?arch=source" % pkg},
            "ranges": [{"type": "ECOSYSTEM", "events": events}],
        }],
        "references": [{"type": "ADVISORY",
                        "url": "https://security-tracker.debian.org/tracker/%s" % rid}],
    }
    if versions:
        r["affected"][0]["versions"] = versions
    if severity:
        r["severity"] = [{"type": "CVSS_V3", "score": severity}]
    if withdrawn:
        r["withdrawn"] = withdrawn
    return r


MEDIUM = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"  # 5.4
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8


def synthetic(prefix, n, sources, modified):
    """N records over the image's source packages that do not affect the
    installed versions: fixed at exactly the installed version, fixed below it
    (with the affected versions listed, as Debian's records do), or introduced
    after it."""
    names = sorted(sources)
    for i in range(n):
        pkg = names[i % len(names)]
        ver = sources[pkg]
        kind = i % 3
        if kind == 0:
            ev = [{"introduced": "0"}, {"fixed": ver}]
            vs = None
        elif kind == 1:
            ev = [{"introduced": "0"}, {"fixed": "0.0.1"}]
            vs = ["0.0.0.%d" % j for j in range(1, 6)]
        else:
            ev = [{"introduced": ver + "+bench%d" % i}]
            vs = None
        yield osv_record("DEBIAN-%s-%06d" % (prefix, i), pkg, ev, modified, versions=vs)


def write_zip(path, records):
    n = 0
    with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as z:
        for r in records:
            z.writestr(r["id"] + ".json", json.dumps(r))
            n += 1
    os.replace(path + ".tmp", path)
    return n


def cmd_osv(layout_path, outdir):
    base_syn = int(os.environ.get("BASE_SYNTHETIC", "1000"))
    base_match = int(os.environ.get("BASE_MATCHING", "5"))
    syn = int(os.environ.get("SYNTHETIC", "20000"))
    match = int(os.environ.get("MATCHING", "20"))
    sources = dpkg_sources(layout_path)
    names = sorted(sources)
    if len(names) < base_match + match:
        raise SystemExit("only %d source packages" % len(names))
    os.makedirs(outdir, exist_ok=True)
    m1 = "2024-01-01T00:00:00Z"
    m2 = "2024-06-01T00:00:00Z"

    def set1():
        yield from synthetic("SYN1", base_syn, sources, m1)
        for j in range(base_match):
            yield osv_record("DEBIAN-BENCH1-%06d" % j, names[j], [{"introduced": "0"}], m1,
                             severity=MEDIUM)

    def set2():
        yield from synthetic("SYN2", syn, sources, m2)
        for j in range(match):
            yield osv_record("DEBIAN-BENCH2-%06d" % j, names[base_match + j],
                             [{"introduced": "0"}], m2, severity=CRITICAL)
        if base_match:
            yield osv_record("DEBIAN-BENCH1-%06d" % 0, names[0], [{"introduced": "0"}], m2,
                             severity=MEDIUM, withdrawn=m2)

    n1 = write_zip(os.path.join(outdir, "set1.zip"), set1())
    n2 = write_zip(os.path.join(outdir, "set2.zip"), set2())
    print(json.dumps({"source_packages": len(names), "set1": n1, "set2": n2,
                      "set1_matching": names[:base_match],
                      "set2_matching": names[base_match:base_match + match],
                      "set2_withdrawn": names[:1] if base_match else []}))


# ------------------------------------------------------------------ big image

def cmd_bigimage(base, outdir, mib):
    """BASE's layers + a gzip layer of MIB MiB of random bytes: 4 files of
    MIB/8 MiB each (half the bytes), the rest in 128 KiB files."""
    base_l = Layout(base)
    tmp = outdir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "blobs", "sha256"))
    for l in base_l.layers:
        os.link(base_l.blob_path(l["digest"]),
                os.path.join(tmp, "blobs", "sha256", l["digest"].split(":")[1]))
    big = mib // 8
    small_count = (mib * 1024 - 4 * big * 1024) // 128
    tarpath = os.path.join(tmp, "layer.tar.gz")
    diff = hashlib.sha256()
    comp = hashlib.sha256()

    class Tee:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            comp.update(b)
            return self.f.write(b)

        def flush(self):
            self.f.flush()

    class Diff:
        def __init__(self, g):
            self.g = g

        def write(self, b):
            diff.update(b)
            return self.g.write(b)

        def flush(self):
            pass

    rnd = open("/dev/urandom", "rb")
    with open(tarpath, "wb") as raw:
        tee = Tee(raw)
        g = gzip.GzipFile(fileobj=tee, mode="wb", compresslevel=1, mtime=0)
        t = tarfile.open(fileobj=Diff(g), mode="w|", format=tarfile.PAX_FORMAT)

        def add_dir(name):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)

        def add_file(name, size):
            ti = tarfile.TarInfo(name)
            ti.size = size
            ti.mode = 0o644

            class R:
                left = size

                def read(self, n=-1):
                    n = self.left if n < 0 else min(n, self.left)
                    self.left -= n
                    return rnd.read(n)

            t.addfile(ti, R())

        add_dir("opt")
        add_dir("opt/bigdata")
        for i in range(4):
            add_file("opt/bigdata/blob%d.bin" % i, big << 20)
        for d in range((small_count + 999) // 1000):
            add_dir("opt/bigdata/d%03d" % d)
        for i in range(small_count):
            add_file("opt/bigdata/d%03d/f%05d.bin" % (i // 1000, i), 128 << 10)
        t.close()
        g.close()
    ld = "sha256:" + comp.hexdigest()
    os.rename(tarpath, os.path.join(tmp, "blobs", "sha256", comp.hexdigest()))
    cfg = json.loads(json.dumps(base_l.config))
    cfg["rootfs"]["diff_ids"].append("sha256:" + diff.hexdigest())
    cfg.setdefault("history", []).append({"created_by": "bench/scan.py bigimage %d MiB" % mib})
    cb = json.dumps(cfg, sort_keys=True).encode()
    open(os.path.join(tmp, "blobs", "sha256", hashlib.sha256(cb).hexdigest()), "wb").write(cb)
    m = json.loads(base_l.manifest_bytes)
    m["config"] = dict(m["config"], digest=sha256(cb), size=len(cb))
    m["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": ld, "size": os.path.getsize(
                            os.path.join(tmp, "blobs", "sha256", comp.hexdigest()))})
    mb = json.dumps(m, sort_keys=True).encode()
    open(os.path.join(tmp, "blobs", "sha256", hashlib.sha256(mb).hexdigest()), "wb").write(mb)
    json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
               "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(mb), "size": len(mb),
                              "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
              open(os.path.join(tmp, "index.json"), "w"))
    json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(tmp, "oci-layout"), "w"))
    shutil.rmtree(outdir, ignore_errors=True)
    os.rename(tmp, outdir)
    print(json.dumps({"layer": ld, "files": 4 + small_count,
                      "compressed_bytes": m["layers"][-1]["size"]}))


# ------------------------------------------------------------------ measuring

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Bench:
    def __init__(self, cfg):
        self.cfg = cfg
        self.tmp = cfg["tmp"]
        self.runs = cfg["runs"]
        self.logfile = open(os.path.join(self.tmp, "berth.log"), "ab")
        self.results = {"images": {}, "notes": []}
        self.template = None
        self.seq = 0

    def note(self, s):
        log("NOTE:", s)
        self.results["notes"].append(s)

    def fresh_dir(self):
        self.seq += 1
        d = os.path.join(self.tmp, "data-%03d" % self.seq)
        shutil.copytree(self.template, d, symlinks=True)
        return d

    def server(self, data_dir):
        return Berth(self.cfg, data_dir, self.logfile)

    def wait_no_jobs(self, b, kinds=("rescan", "scan-image"), timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = json.loads(b.cli("jobs", "list").stdout)
            if not [j for j in jobs if j["kind"] in kinds]:
                return
            time.sleep(0.2)
        raise RuntimeError("jobs %s still queued after %d s" % (kinds, timeout))

    def make_template(self):
        """A data dir with the registry's scanning rule (ENHANCED,
        CONTINUOUS_SCAN on every repository: scanned on push and re-matched
        after an import) and OSV set1 imported."""
        d = os.path.join(self.tmp, "template")
        os.makedirs(d)
        b = self.server(d)
        try:
            b.ecr.put_registry_scanning_configuration(
                scanType="ENHANCED",
                rules=[{"scanFrequency": "CONTINUOUS_SCAN",
                        "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}])
            t = time.perf_counter()
            b.cli("vulndb", "import", self.cfg["osv_set1"])
            self.results["set1_import_s"] = time.perf_counter() - t
            self.wait_no_jobs(b)
            self.results["vulndb_status_set1"] = b.cli("vulndb", "status").stdout.strip()
        finally:
            b.stop()
        self.template = d

    # -- one scan, timed from the manifest PUT's answer to COMPLETE
    def berth_scan(self, b, repo, layout, tag):
        cb, mb = layout.variant("%s-%s-%d" % (repo, tag, time.time_ns()))
        b.v2.push_blob(repo, sha256(cb), data=cb)
        digest = sha256(mb)
        before = b.metrics()
        rss0 = b.status()["VmRSS"]
        b.reset_peak()
        b.v2.put_manifest(repo, tag, mb, layout.media_type)
        t_ack = time.time()
        st, resp = b.wait_scan(repo, digest)
        t_done = time.time()
        s = b.status()
        after = b.metrics()
        if st != "COMPLETE":
            raise RuntimeError("%s:%s scan ended %s: %s" % (
                repo, tag, st, resp["imageScanStatus"].get("description")))
        completed = resp["imageScanFindings"].get("imageScanCompletedAt")
        server_s = completed.timestamp() - t_ack if completed else None
        hits = after.get("berth_scan_layer_cache_hits_total", 0) - before.get(
            "berth_scan_layer_cache_hits_total", 0)
        misses = after.get("berth_scan_layer_cache_misses_total", 0) - before.get(
            "berth_scan_layer_cache_misses_total", 0)
        counts = resp["imageScanFindings"].get("findingSeverityCounts", {})
        return {"secs": t_done - t_ack, "server_secs": server_s, "rss0_kb": rss0,
                "hwm_kb": s["VmHWM"], "rss1_kb": s["VmRSS"], "cache_hits": hits,
                "cache_misses": misses, "counts": counts, "digest": digest}

    def trivy(self, port, ref, cache):
        out = os.path.join(self.tmp, "trivy-out.json")
        cmd = ["/usr/bin/time", "-v", self.cfg["trivy"], "image", "--format", "cyclonedx",
               "--output", out, "--insecure", "--image-src", "remote",
               "--skip-db-update", "--skip-java-db-update", "--skip-check-update",
               "--skip-version-check", "--disable-telemetry", "--offline-scan",
               "--quiet", "--timeout", "60m", "--cache-dir", cache,
               "127.0.0.1:%d/%s" % (port, ref)]
        env = dict(os.environ, TRIVY_INSECURE="true", NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost")
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        secs = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError("trivy %s: exit %d: %s" % (ref, r.returncode, r.stderr[-800:]))
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
        comps = json.load(open(out)).get("components", [])
        libs = sum(1 for c in comps if c.get("type") == "library")
        return {"secs": secs, "hwm_kb": int(m.group(1)) if m else None, "packages": libs}

    def berth_packages(self, b, repo, tag):
        r = b.cli("scan", "sbom", "%s:%s" % (repo, tag), check=False)
        if r.returncode != 0:
            self.note("berth scan sbom %s:%s: %s" % (repo, tag, r.stderr.strip()[-300:]))
            return None
        doc = json.loads(r.stdout)
        return sum(1 for c in doc.get("components", []) if c.get("type") == "library")

    def image(self, name, layout_path, runs, warm_runs):
        layout = Layout(layout_path)
        repo = "bench/%s" % name
        res = {"layers": len(layout.layers), "compressed_bytes": layout.size(),
               "cold": [], "warm": [], "trivy": [], "trivy_warm": None}
        log("%s: %d layers, %.1f MiB compressed" % (name, len(layout.layers),
                                                      layout.size() / 2**20))
        b = None
        try:
            for r in range(runs):
                if b:
                    b.stop()
                b = self.server(self.fresh_dir())
                t = time.perf_counter()
                b.v2.push_layers(repo, layout)
                push_s = time.perf_counter() - t
                x = self.berth_scan(b, repo, layout, "cold")
                x["layer_push_s"] = push_s
                res["cold"].append(x)
                log("  berth cold %d: %.3f s (server %.3f), peak %d MiB (rss before %d MiB), misses %d"
                    % (r + 1, x["secs"], x["server_secs"] or -1, x["hwm_kb"] >> 10,
                       x["rss0_kb"] >> 10, x["cache_misses"]))
            for r in range(warm_runs):
                x = self.berth_scan(b, repo, layout, "warm%d" % r)
                res["warm"].append(x)
                log("  berth warm %d: %.3f s, peak %d MiB, hits %d misses %d"
                    % (r + 1, x["secs"], x["hwm_kb"] >> 10, x["cache_hits"], x["cache_misses"]))
            self.wait_no_jobs(b)
            res["berth_packages"] = self.berth_packages(b, repo, "cold")
            cache = None
            for r in range(runs):
                cache = tempfile.mkdtemp(prefix="trivy-cache-", dir=self.tmp)
                x = self.trivy(b.port, "%s:cold" % repo, cache)
                res["trivy"].append(x)
                log("  trivy fresh cache %d: %.3f s, max RSS %d MiB, %d packages"
                    % (r + 1, x["secs"], (x["hwm_kb"] or 0) >> 10, x["packages"]))
                if r < runs - 1:
                    shutil.rmtree(cache, ignore_errors=True)
            x = self.trivy(b.port, "%s:cold" % repo, cache)
            res["trivy_warm"] = x
            shutil.rmtree(cache, ignore_errors=True)
            log("  trivy warm cache: %.3f s, max RSS %d MiB" % (x["secs"], (x["hwm_kb"] or 0) >> 10))
        finally:
            if b:
                b.stop()
                shutil.rmtree(b.data_dir, ignore_errors=True)
        self.results["images"][name] = res

    # -- 10,000 images re-matched after an import
    def rematch(self, n, conc):
        layout = Layout(self.cfg["layouts"]["debian"])
        d = self.fresh_dir()
        b = self.server(d)
        res = {"images": n}
        try:
            repos = ["bench/rematch-%d" % i for i in range(self.cfg["rematch_repos"])]
            for repo in repos:
                b.v2.push_layers(repo, layout)
            errors = []
            counter = iter(range(n))
            lock = threading.Lock()
            digests = {}

            def worker():
                v2 = V2(b.port)
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    repo = repos[i % len(repos)]
                    try:
                        cb, mb = layout.variant("rematch-%06d" % i)
                        v2.push_blob(repo, sha256(cb), data=cb)
                        v2.put_manifest(repo, "i%06d" % i, mb, layout.media_type)
                        with lock:
                            digests[i] = (repo, sha256(mb))
                    except Exception as e:  # noqa: BLE001
                        with lock:
                            errors.append(str(e))

            log("rematch: pushing %d manifests (debian layers, distinct configs) into %d repositories"
                % (n, len(repos)))
            t = time.perf_counter()
            ths = [threading.Thread(target=worker) for _ in range(conc)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            res["push_s"] = time.perf_counter() - t
            if errors:
                raise RuntimeError("%d pushes failed, first: %s" % (len(errors), errors[0]))
            while True:
                m = b.metrics()
                done = sum(v for k, v in m.items() if k.startswith("berth_scan_finished_total"))
                if done >= n:
                    break
                if time.perf_counter() - t > 3600:
                    raise RuntimeError("only %d of %d scans finished" % (done, n))
                time.sleep(0.2)
            res["push_and_scan_s"] = time.perf_counter() - t
            ok = m.get('berth_scan_finished_total{status="COMPLETE"}', 0)
            if ok != n:
                raise RuntimeError("%d of %d scans COMPLETE: %s" % (
                    ok, n, {k: v for k, v in m.items() if "scan_finished" in k}))
            self.wait_no_jobs(b)
            log("rematch: %d scans COMPLETE %.1f s after the first push" % (n, res["push_and_scan_s"]))
            before = self.severity_counts(b, repos, n)
            res["counts_before"] = before
            m0 = b.metrics()
            rss0 = b.status()["VmRSS"]
            b.reset_peak()
            log("rematch: berth vulndb import %s" % self.cfg["osv_set2"])
            t0 = time.time()
            b.cli("vulndb", "import", self.cfg["osv_set2"])
            t1 = time.time()
            key_runs = 'berth_job_runs_total{kind="rescan",outcome="ok"}'
            key_sum = 'berth_job_duration_seconds_sum{kind="rescan"}'
            runs0 = sum(v for k, v in m0.items()
                        if k.startswith("berth_job_runs_total") and 'kind="rescan"' in k)
            while True:
                m = b.metrics()
                runs = sum(v for k, v in m.items()
                           if k.startswith("berth_job_runs_total") and 'kind="rescan"' in k)
                if runs > runs0:
                    break
                if time.time() - t1 > 600:
                    raise RuntimeError("no rescan job finished 600 s after the import")
                time.sleep(0.02)
            t2 = time.time()
            s = b.status()
            ran_ok = [k for k in m if k.startswith("berth_job_runs_total") and 'kind="rescan"' in k
                      and m[k] > m0.get(k, 0)]
            res["rescan_outcome"] = ran_ok
            res["import_s"] = t1 - t0
            res["import_to_rematched_s"] = t2 - t1
            res["total_s"] = t2 - t0
            res["rescan_job_s"] = m.get(key_sum, 0) - m0.get(key_sum, 0)
            res["rematched_metric_delta"] = (m.get("berth_scan_rematched_total", 0)
                                             - m0.get("berth_scan_rematched_total", 0))
            res["rss0_kb"] = rss0
            res["hwm_kb"] = s["VmHWM"]
            log("rematch: import %.2f s, then re-matched %.2f s later (job %.2f s); "
                "berth_scan_rematched_total +%d" % (res["import_s"], res["import_to_rematched_s"],
                                                    res["rescan_job_s"],
                                                    res["rematched_metric_delta"]))
            after = self.severity_counts(b, repos, n)
            res["counts_after"] = after
            res["vulndb_status"] = b.cli("vulndb", "status").stdout.strip()
        finally:
            b.stop()
            shutil.rmtree(d, ignore_errors=True)
        self.results["rematch"] = res

    def severity_counts(self, b, repos, n):
        """{counts as JSON: images} over every image, by DescribeImages."""
        hist = {}
        total = 0
        for repo in repos:
            pages = b.ecr.get_paginator("describe_images").paginate(
                repositoryName=repo, PaginationConfig={"PageSize": 1000})
            for page in pages:
                for d in page["imageDetails"]:
                    total += 1
                    st = d.get("imageScanStatus", {}).get("status")
                    c = d.get("imageScanFindingsSummary", {}).get("findingSeverityCounts", {})
                    key = json.dumps({"status": st, **c}, sort_keys=True)
                    hist[key] = hist.get(key, 0) + 1
        if total != n:
            self.note("DescribeImages listed %d images, expected %d" % (total, n))
        return hist


def cmd_run(config_path):
    cfg = json.load(open(config_path))
    bench = Bench(cfg)
    bench.results["runs"] = cfg["runs"]
    t = time.perf_counter()
    try:
        bench.make_template()
        for name in cfg["images"]:
            bench.image(name, cfg["layouts"][name], cfg["runs"], cfg["runs"])
        if cfg.get("big"):
            bench.image("big1g", cfg["big"], cfg["big_runs"], cfg["big_runs"])
        if cfg.get("rematch_images"):
            bench.rematch(cfg["rematch_images"], cfg["rematch_conc"])
    finally:
        bench.results["wall_s"] = time.perf_counter() - t
        json.dump(bench.results, open(cfg["results"], "w"), indent=1)
    print(report(bench.results, cfg))


def report(res, cfg):
    L = []
    mib = lambda kb: "%d" % round(kb / 1024) if kb else "?"  # noqa: E731
    sec = lambda s: "%.3f" % s if s is not None else "?"  # noqa: E731
    L.append("| image | compressed | Berth cold (s) [server] | Berth warm (s) [server] | Trivy fresh cache (s) | "
             "Trivy warm cache (s) | Trivy fresh / Berth cold | Trivy warm / Berth warm | Berth peak RSS cold / warm (MiB) "
             "| Trivy max RSS (MiB) | packages Berth / Trivy |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in res["images"].items():
        bc = med([x["secs"] for x in r["cold"]])
        bw = med([x["secs"] for x in r["warm"]])
        tr = med([x["secs"] for x in r["trivy"]])
        tw = r["trivy_warm"]["secs"] if r.get("trivy_warm") else None
        hc = max((x["hwm_kb"] for x in r["cold"]), default=None)
        hw = max((x["hwm_kb"] for x in r["warm"]), default=None)
        th = max((x["hwm_kb"] or 0 for x in r["trivy"]), default=None)
        ratio = lambda a, b: "%.1fx" % (a / b) if a and b else "?"  # noqa: E731
        bcs = med([x["server_secs"] for x in r["cold"]])
        bws = med([x["server_secs"] for x in r["warm"]])
        L.append("| %s | %.1f MiB | %s (%s) | %s (%s) | %s | %s | %s | %s | %s / %s | %s | %s / %s |" % (
            name, r["compressed_bytes"] / 2**20, sec(bc), sec(bcs), sec(bw), sec(bws), sec(tr), sec(tw),
            ratio(tr, bc), ratio(tw, bw), mib(hc), mib(hw), mib(th),
            r.get("berth_packages", "?"),
            r["trivy"][0]["packages"] if r["trivy"] else "?"))
    L.append("")
    L.append("Berth: median of %d, from the manifest PUT's 201 to DescribeImageScanFindings saying "
             "COMPLETE (polled every 20 ms) [server: imageScanCompletedAt - the PUT's 201]; cold = fresh data dir, warm = same layers, new config. "
             "Peak RSS = server VmHWM after resetting it (clear_refs 5) just before the PUT; "
             "RSS before the PUT (cold): %s MiB." % (res.get("runs", 0), ", ".join(
                 "%s %s" % (n, mib(med([x["rss0_kb"] for x in r["cold"]])))
                 for n, r in res["images"].items())))
    rm = res.get("rematch")
    if rm:
        L.append("")
        L.append("Re-match: %d images (%s), import of set2 %.2f s (CLI), then every image re-matched "
                 "%.2f s after the import returned (rescan job itself %.2f s); total %.2f s. "
                 "Server peak RSS %s MiB (before %s MiB). berth_scan_rematched_total +%d." % (
                     rm["images"], "pushed+scanned in %.1f s" % rm["push_and_scan_s"],
                     rm["import_s"], rm["import_to_rematched_s"], rm["rescan_job_s"],
                     rm["total_s"], mib(rm["hwm_kb"]), mib(rm["rss0_kb"]),
                     rm["rematched_metric_delta"]))
        L.append("Findings before: %s" % rm["counts_before"])
        L.append("Findings after:  %s" % rm["counts_after"])
    for n in res["notes"]:
        L.append("NOTE: " + n)
    return "\n".join(L)


def main(argv):
    if len(argv) >= 3 and argv[1] == "osv":
        return cmd_osv(argv[2], argv[3])
    if len(argv) >= 2 and argv[1] == "bigimage":
        return cmd_bigimage(argv[2], argv[3], int(argv[4]))
    if len(argv) >= 2 and argv[1] == "run":
        p = argparse.ArgumentParser()
        p.add_argument("--config", required=True)
        a = p.parse_args(argv[2:])
        return cmd_run(a.config)
    if len(argv) >= 2 and argv[1] == "report":
        cfg = {}
        print(report(json.load(open(argv[2])), cfg))
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)

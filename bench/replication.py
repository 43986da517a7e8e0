#!/usr/bin/env python3
"""Helper for bench/replication.sh (standard library, plus boto3 for the
signed ECR calls). Every command prints one JSON object on stdout.

A registry is given as ENDPOINT[@ACCOUNT]: http://127.0.0.1:PORT, and the
account whose registry /v2/ addresses (the `ACCOUNT.127.0.0.1:PORT` host;
none: the primary account's bare host). The credentials are those of
BERTH_BENCH_AKID / BERTH_BENCH_SECRET, or for the destination of `lag`
BERTH_BENCH_DST_AKID / BERTH_BENCH_DST_SECRET when set. REGION is the
region the registry serves (SigV4 scope of GetAuthorizationToken).

  replication.py lag SRC SRC_REGION DST DST_REGION REPO COUNT SIZE [POLL_MS] [GAP_MS]
      Push COUNT small images (a config and one SIZE-byte random layer each,
      generated before the clock; POST + PUT ?digest= per blob, then the
      manifest PUT by tag i00000..) to SRC over one keep-alive connection.
      A second thread polls DST's GET /v2/REPO/manifests/<tag> (one
      keep-alive connection, POLL_MS between answers that are not 200;
      default 5) for the images in push order: an image's lag is from the
      moment its manifest PUT at SRC returned to the first 200 at DST. With
      GAP_MS, the pusher waits that long after each image (images one at a
      time: the lag of an image with nothing queued before it).
      {count, push_s, push_ms_median, push_ms_p95, lag_ms_median, lag_ms_p95,
      lag_ms_max, last_pullable_s (from the first push to the last image
      pullable), errors, first_error}

  replication.py push DST REGION REPO COUNT SIZE
      The same push alone (no polling): the baseline "push the same images
      to the destination yourself". {count, push_s, push_ms_median,
      push_ms_p95, errors, first_error}

  replication.py big SRC SRC_REGION DST DST_REGION REPO TAG FILE [POLL_MS]
      Push an image whose one layer is FILE (streamed from disk; POST, then
      PUT ?digest= with the whole file) to SRC, then poll DST's GET manifest
      (POLL_MS, default 20) until 200. {bytes, push_s (blob and manifest),
      lag_s (manifest PUT returned -> first 200 at DST), lag_mb_s (MB/s of
      the layer over the lag), digest}

  replication.py arrivals DST REGION REPO COUNT TIMEOUT
      Poll DST's ListImages (maxResults 1000, every page) every 100 ms until
      REPO holds COUNT images or TIMEOUT seconds pass; times are from the
      call's start. {count, first_s (first image listed), all_s, ok}

  replication.py setup ENDPOINT REGION WHO JSON
      As WHO (src: BERTH_BENCH_AKID, dst: BERTH_BENCH_DST_AKID): create the
      repositories JSON.repositories, put JSON.rules as the replication
      configuration and JSON.registry_policy as the registry policy (each
      when given). {ok}

  replication.py password ENDPOINT REGION
      The registry password (GetAuthorizationToken's, after `AWS:`), printed
      as it is (not JSON), for `skopeo --creds AWS:...`.

  replication.py statuses SRC REGION REPO
      DescribeImageReplicationStatus of every image of REPO at SRC; the
      number in each status. {images, by_status: {COMPLETE: n, ...}}
"""

import base64
import hashlib
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smallblobs  # noqa: E402  (same directory)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def out(obj):
    print(json.dumps(obj))


def creds(dst=False):
    if dst and os.environ.get("BERTH_BENCH_DST_AKID"):
        return os.environ["BERTH_BENCH_DST_AKID"], os.environ["BERTH_BENCH_DST_SECRET"]
    return os.environ["BERTH_BENCH_AKID"], os.environ["BERTH_BENCH_SECRET"]


def ecr(endpoint, region, dst=False):
    import boto3
    from botocore.config import Config

    akid, secret = creds(dst)
    return boto3.session.Session().client(
        "ecr", region_name=region, endpoint_url=endpoint.split("@")[0],
        aws_access_key_id=akid, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120))


class Registry(http.client.HTTPConnection):
    """A keep-alive connection to the /v2/ of ENDPOINT[@ACCOUNT], every
    request with the registry token and the account's host."""

    def __init__(self, spec, region, dst=False):
        endpoint, _, account = spec.partition("@")
        u = urllib.parse.urlsplit(endpoint)
        if u.hostname not in ("127.0.0.1", "localhost"):
            sys.exit("replication.py: refusing a non-loopback address: %s" % u.hostname)
        super().__init__(u.hostname, u.port, timeout=600, blocksize=1 << 20)
        self.host_header = ("%s.%s" % (account, u.netloc)) if account else u.netloc
        data = ecr(endpoint, region, dst).get_authorization_token(
            **({"registryIds": [account]} if account else {}))["authorizationData"][0]
        self.auth = "Basic " + data["authorizationToken"]

    def request(self, method, url, body=None, headers=None, **kw):
        h = dict(headers or {})
        h["Authorization"] = self.auth
        h["Host"] = self.host_header
        super().request(method, url, body=body, headers=h, **kw)


def small_images(count, size):
    """(tag, [config, layer], manifest bytes) for COUNT distinct images."""
    images = []
    for i in range(count):
        layer = os.urandom(size)
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": i,
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        images.append(("i%05d" % i, [config, layer], manifest_of(config, [(len(layer), sha(layer))])))
    return images


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def manifest_of(config, layers):
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha(config)},
        "layers": [{"mediaType": LAYER, "size": n, "digest": d} for n, d in layers],
    }).encode()


def put_manifest(conn, repo, tag, manifest):
    st, _, data = smallblobs.request(conn, "PUT", "/v2/%s/manifests/%s" % (repo, tag), body=manifest,
                                     headers={"Content-Type": OCI_MANIFEST})
    return None if st == 201 else "manifest PUT %d %s" % (st, data[:200])


def push_all(conn, repo, images, acked=None, gap=0.0):
    """Push every image; per-image push durations (s), errors, first error.
    `acked[i]` is set to the monotonic time image i's manifest PUT returned."""
    durations, errors, first_error = [], 0, None
    for i, (tag, blobs, manifest) in enumerate(images):
        t = time.monotonic()
        err = None
        for b in blobs:
            _, err = smallblobs.push_blob(conn, repo, b)
            if err:
                break
        err = err or put_manifest(conn, repo, tag, manifest)
        done = time.monotonic()
        if acked is not None:
            acked[i] = done
        durations.append(done - t)
        if err:
            errors += 1
            first_error = first_error or err
        if gap:
            time.sleep(gap)
    return durations, errors, first_error


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(x):
    return round(x * 1000, 1)


def get_ok(conn, repo, ref):
    st, _, _ = smallblobs.request(conn, "GET", "/v2/%s/manifests/%s" % (repo, ref),
                                  headers={"Accept": OCI_MANIFEST})
    return st == 200


def cmd_lag(src, src_region, dst, dst_region, repo, count, size, poll_ms=5, gap_ms=0):
    images = small_images(count, size)
    push = Registry(src, src_region)
    poll = Registry(dst, dst_region, dst=True)
    acked = [None] * count
    pullable = [None] * count
    stop = threading.Event()

    def poller():
        i = 0
        while i < count and not stop.is_set():
            if acked[i] is None:
                time.sleep(poll_ms / 1000)
                continue
            if get_ok(poll, repo, images[i][0]):
                pullable[i] = time.monotonic()
                i += 1
            else:
                time.sleep(poll_ms / 1000)

    th = threading.Thread(target=poller, daemon=True)
    t0 = time.monotonic()
    th.start()
    durations, errors, first_error = push_all(push, repo, images, acked, gap_ms / 1000)
    push_s = time.monotonic() - t0
    th.join(timeout=600)
    stop.set()
    lags = [p - a for a, p in zip(acked, pullable) if p is not None]
    missing = sum(p is None for p in pullable)
    out({
        "count": count, "push_s": round(push_s, 3),
        "push_ms_median": ms(statistics.median(durations)), "push_ms_p95": ms(pct(durations, 95)),
        "lag_ms_median": ms(statistics.median(lags)) if lags else None,
        "lag_ms_p95": ms(pct(lags, 95)) if lags else None,
        "lag_ms_max": ms(max(lags)) if lags else None,
        "last_pullable_s": round(max(p for p in pullable if p) - t0, 3) if lags else None,
        "never_pullable": missing, "errors": errors, "first_error": first_error,
    })


def cmd_push(dst, region, repo, count, size):
    images = small_images(count, size)
    conn = Registry(dst, region)
    t0 = time.monotonic()
    durations, errors, first_error = push_all(conn, repo, images)
    out({
        "count": count, "push_s": round(time.monotonic() - t0, 3),
        "push_ms_median": ms(statistics.median(durations)), "push_ms_p95": ms(pct(durations, 95)),
        "errors": errors, "first_error": first_error,
    })


def cmd_big(src, src_region, dst, dst_region, repo, tag, path, poll_ms=20):
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "big": tag,
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    push = Registry(src, src_region)
    poll = Registry(dst, dst_region, dst=True)
    t0 = time.monotonic()
    _, err = smallblobs.push_blob(push, repo, config)
    if err:
        sys.exit("config: " + err)
    st, loc, data = smallblobs.request(push, "POST", "/v2/%s/blobs/uploads/" % repo, body=b"",
                                       headers={"Content-Length": "0"})
    if st != 202:
        sys.exit("POST %d %s" % (st, data[:200]))
    with open(path, "rb") as f:
        st, _, data = smallblobs.request(push, "PUT", smallblobs.with_digest(loc, digest), body=f,
                                         headers={"Content-Type": "application/octet-stream",
                                                  "Content-Length": str(size)})
    if st != 201:
        sys.exit("PUT %d %s" % (st, data[:200]))
    manifest = manifest_of(config, [(size, digest)])
    err = put_manifest(push, repo, tag, manifest)
    if err:
        sys.exit(err)
    acked = time.monotonic()
    while not get_ok(poll, repo, tag):
        time.sleep(poll_ms / 1000)
    lag = time.monotonic() - acked
    out({"bytes": size, "push_s": round(acked - t0, 3), "lag_s": round(lag, 3),
         "lag_mb_s": round(size / 1e6 / lag, 1), "digest": sha(manifest)})


def list_all(client, repo):
    ids, token = [], None
    while True:
        kw = {"repositoryName": repo, "maxResults": 1000}
        if token:
            kw["nextToken"] = token
        try:
            r = client.list_images(**kw)
        except client.exceptions.RepositoryNotFoundException:
            return []
        ids += r["imageIds"]
        token = r.get("nextToken")
        if not token:
            return ids


def cmd_arrivals(dst, region, repo, count, timeout):
    client = ecr(dst, region)
    t0 = time.monotonic()
    first = None
    n = 0
    while time.monotonic() - t0 < timeout:
        n = len({i["imageDigest"] for i in list_all(client, repo)})
        now = time.monotonic() - t0
        if n and first is None:
            first = now
        if n >= count:
            out({"count": n, "first_s": round(first, 3), "all_s": round(now, 3), "ok": True})
            return
        time.sleep(0.1)
    out({"count": n, "first_s": first and round(first, 3), "all_s": None, "ok": False})


def cmd_statuses(src, region, repo):
    client = ecr(src, region)
    digests = {i["imageDigest"] for i in list_all(client, repo)}
    by = {}
    for d in digests:
        r = client.describe_image_replication_status(repositoryName=repo, imageId={"imageDigest": d})
        for s in r["replicationStatuses"] or [{"status": "NONE"}]:
            key = s["status"] + ("/" + s["failureCode"] if s.get("failureCode") else "")
            by[key] = by.get(key, 0) + 1
    out({"images": len(digests), "by_status": by})


def cmd_setup(endpoint, region, who, doc):
    doc = json.loads(doc)
    client = ecr(endpoint, region, dst=(who == "dst"))
    for r in doc.get("repositories", []):
        client.create_repository(repositoryName=r)
    if "rules" in doc:
        client.put_replication_configuration(replicationConfiguration={"rules": doc["rules"]})
    if "registry_policy" in doc:
        client.put_registry_policy(policyText=json.dumps(doc["registry_policy"]))
    out({"ok": True})


def cmd_password(endpoint, region):
    data = ecr(endpoint, region).get_authorization_token()["authorizationData"][0]
    print(base64.b64decode(data["authorizationToken"]).decode()[len("AWS:"):])


def main(a):
    cmds = {
        "lag": (cmd_lag, [str, str, str, str, str, int, int], [int, int]),
        "push": (cmd_push, [str, str, str, int, int], []),
        "big": (cmd_big, [str, str, str, str, str, str, str], [int]),
        "arrivals": (cmd_arrivals, [str, str, str, int, float], []),
        "statuses": (cmd_statuses, [str, str, str], []),
        "password": (cmd_password, [str, str], []),
        "setup": (cmd_setup, [str, str, str, str], []),
    }
    if len(a) < 2 or a[1] not in cmds:
        sys.exit(__doc__)
    f, req, opt = cmds[a[1]]
    args = a[2:]
    if not len(req) <= len(args) <= len(req) + len(opt):
        sys.exit(__doc__)
    f(*[t(v) for t, v in zip(req + opt, args)])


if __name__ == "__main__":
    main(sys.argv)

#!/usr/bin/env python3
"""Helper for bench/scale-out.sh (standard library, plus botocore/boto3 for
the signed ECR calls and the S3 housekeeping).

Every command prints one JSON object on stdout. Addresses must be loopback.

  scaleout.py manifests HOST:PORT REPO COUNT CONC [PREFIX]
      Push one shared config blob and one shared 1 KiB layer, then (timed) PUT
      COUNT distinct OCI manifests (same blobs, a distinct annotation) by tag
      PREFIX00000.. (default "m"), CONC threads, one keep-alive connection
      each. {ok, errors, secs, per_s, first_error}

  scaleout.py tags HOST:PORT REPO IMAGES TAGS CONC
      IMAGES distinct manifests (as above), each PUT under TAGS tags
      (i000-t0000 ..): IMAGES x TAGS manifest PUTs, tag-major order, CONC
      threads. The first PUT of an image stores it; the others only tag it.
      {ok, errors, secs, per_s, first_error}

  scaleout.py smallpush HOST:PORT[,HOST:PORT..] REPO COUNT SIZE START_AT
      bench/smallblobs.py's push (POST + PUT ?digest=, one keep-alive
      connection, blobs generated before the clock), but started at the
      wall-clock time START_AT (so that several processes overlap) against the
      first address. {ok, errors, t0, t1, first_error}

  scaleout.py pages ENDPOINT REPO OP MAX_RESULTS REPEAT EXPECT
      OP: ListImages | DescribeImages. Walks every page (maxResults
      MAX_RESULTS) with SigV4-signed requests (botocore's signer, service ecr,
      us-east-1) over one keep-alive connection, timing each page from sending
      the request to the last byte of the response (JSON decoding is not
      timed); then times the first and the last page REPEAT more times each
      (the last with the nextToken that reached it). Checks the item count
      against EXPECT. Credentials: BERTH_BENCH_AKID / BERTH_BENCH_SECRET.
      {pages, items, first_ms, last_ms (medians of REPEAT), walk_ms (median
      page in the walk), max_ms, max_page, first_bytes, last_bytes, walk_s}

  scaleout.py s3 mkbucket|rmbucket|du ENDPOINT BUCKET
      Housekeeping with boto3 (credentials from AWS_ACCESS_KEY_ID /
      AWS_SECRET_ACCESS_KEY): create a bucket; delete every object, every
      multipart upload and the bucket; count objects and bytes.
"""

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


def out(obj):
    print(json.dumps(obj))


def base_blobs(conn, repo):
    """Push the shared layer and config; their (digest, size) pairs."""
    layer = hashlib.sha256(b"scale-out layer").digest() * 32  # 1 KiB, fixed
    ld, err = smallblobs.push_blob(conn, repo, layer)
    if err:
        sys.exit("layer push failed: " + err)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [ld]}}).encode()
    cd, err = smallblobs.push_blob(conn, repo, config)
    if err:
        sys.exit("config push failed: " + err)
    return (cd, len(config)), (ld, len(layer))


def manifest(cfg, layer, n):
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cfg[0], "size": cfg[1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer[0], "size": layer[1]}],
        "annotations": {"bench.scale-out.n": str(n)},
    }).encode()


def run_puts(hostport, repo, jobs, conc):
    """PUT each (tag, body) of `jobs` with `conc` threads; JSON summary."""
    lock = threading.Lock()
    state = {"ok": 0, "errors": 0, "first_error": None}

    def worker(k):
        conn = smallblobs.conn_for(hostport)
        ok = errs = 0
        first = None
        for i in range(k, len(jobs), conc):
            tag, body = jobs[i]
            try:
                st, _, data = smallblobs.request(
                    conn, "PUT", "/v2/%s/manifests/%s" % (repo, tag), body=body,
                    headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(len(body))})
            except Exception as e:  # a dropped connection: reconnect, count it
                st, data = 0, repr(e).encode()
                conn.close()
                conn = smallblobs.conn_for(hostport)
            if st == 201:
                ok += 1
            else:
                errs += 1
                first = first or "PUT %s: %d %s" % (tag, st, data[:200])
        conn.close()
        with lock:
            state["ok"] += ok
            state["errors"] += errs
            state["first_error"] = state["first_error"] or first

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    state.update(secs=round(dt, 3), per_s=round(len(jobs) / dt, 1))
    return state


def cmd_manifests(hostport, repo, count, conc, prefix="m"):
    conn = smallblobs.conn_for(hostport)
    cfg, layer = base_blobs(conn, repo)
    conn.close()
    jobs = [("%s%05d" % (prefix, n), manifest(cfg, layer, "%s%d" % (prefix, n)))
            for n in range(count)]
    out(run_puts(hostport, repo, jobs, conc))


def cmd_tags(hostport, repo, images, tags, conc):
    conn = smallblobs.conn_for(hostport)
    cfg, layer = base_blobs(conn, repo)
    conn.close()
    bodies = [manifest(cfg, layer, "img%d" % i) for i in range(images)]
    jobs = [("i%03d-t%04d" % (i, j), bodies[i]) for j in range(tags) for i in range(images)]
    out(run_puts(hostport, repo, jobs, conc))


def cmd_smallpush(hostports, repo, count, size, start_at):
    hostport = hostports.split(",")[0]
    blobs = [os.urandom(size) for _ in range(count)]
    conn = smallblobs.conn_for(hostport)
    conn.connect()
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    ok = errs = 0
    first = None
    t0 = time.time()
    for b in blobs:
        _, err = smallblobs.push_blob(conn, repo, b)
        if err:
            errs += 1
            first = first or err
        else:
            ok += 1
    t1 = time.time()
    conn.close()
    out({"ok": ok, "errors": errs, "t0": t0, "t1": t1, "first_error": first})


# ---------------------------------------------------------------- ECR pages

class Signed:
    """SigV4-signed AWS JSON 1.1 calls to Berth's ECR API over one connection."""

    def __init__(self, endpoint):
        from botocore.auth import SigV4Auth
        from botocore.credentials import Credentials
        u = urllib.parse.urlsplit(endpoint)
        if u.hostname not in ("127.0.0.1", "localhost"):
            sys.exit("scaleout.py: refusing a non-loopback endpoint: " + endpoint)
        self.endpoint = endpoint.rstrip("/") + "/"
        self.host, self.port = u.hostname, u.port
        creds = Credentials(os.environ.get("BERTH_BENCH_AKID", "AKIAIOSFODNN7EXAMPLE"),
                            os.environ.get("BERTH_BENCH_SECRET",
                                           "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"))
        self.signer = SigV4Auth(creds, "ecr", "us-east-1")
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)

    def call(self, op, params):
        """(seconds, raw body); the clock covers signing, sending and reading."""
        from botocore.awsrequest import AWSRequest
        body = json.dumps(params).encode()
        t0 = time.perf_counter()
        req = AWSRequest(method="POST", url=self.endpoint, data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921." + op,
        })
        self.signer.add_auth(req)
        headers = dict(req.headers.items())
        self.conn.request("POST", "/", body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            sys.exit("%s: HTTP %d %s" % (op, r.status, data[:300]))
        return dt, data


def cmd_pages(endpoint, repo, op, max_results, repeat, expect):
    c = Signed(endpoint)
    key = {"ListImages": "imageIds", "DescribeImages": "imageDetails"}[op]
    base = {"repositoryName": repo, "maxResults": max_results}
    times, sizes, tokens = [], [], [None]
    items = 0
    t_walk = time.perf_counter()
    token = None
    while True:
        p = dict(base, **({"nextToken": token} if token else {}))
        dt, raw = c.call(op, p)
        d = json.loads(raw)
        times.append(dt)
        sizes.append(len(raw))
        items += len(d[key])
        token = d.get("nextToken")
        if not token:
            break
        tokens.append(token)
    walk_s = time.perf_counter() - t_walk
    if expect and items != expect:
        print("warning: %s walked %d items, expected %d" % (op, items, expect), file=sys.stderr)

    def median_of(tok):
        p = dict(base, **({"nextToken": tok} if tok else {}))
        return statistics.median(c.call(op, p)[0] for _ in range(repeat))

    first = median_of(tokens[0])
    last = median_of(tokens[-1])
    imax = max(range(len(times)), key=lambda i: times[i])
    out({"pages": len(times), "items": items, "first_ms": round(first * 1000, 2),
         "last_ms": round(last * 1000, 2),
         "walk_ms": round(statistics.median(times) * 1000, 2),
         "walk_first_ms": round(times[0] * 1000, 2), "walk_last_ms": round(times[-1] * 1000, 2),
         "max_ms": round(times[imax] * 1000, 2), "max_page": imax + 1,
         "first_bytes": sizes[0], "last_bytes": sizes[-1], "walk_s": round(walk_s, 3)})


# ---------------------------------------------------------------- S3 housekeeping

def cmd_s3(action, endpoint, bucket):
    import boto3
    from botocore.config import Config
    s3 = boto3.session.Session().client(
        "s3", region_name=os.environ.get("AWS_REGION", "us-east-1"), endpoint_url=endpoint,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))
    if action == "mkbucket":
        s3.create_bucket(Bucket=bucket)
        out({"created": bucket})
        return
    objects = nbytes = 0
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        batch = page.get("Contents", [])
        objects += len(batch)
        nbytes += sum(o["Size"] for o in batch)
        if action == "rmbucket" and batch:
            s3.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": o["Key"]} for o in batch], "Quiet": True})
    if action == "rmbucket":
        for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        s3.delete_bucket(Bucket=bucket)
    out({"bucket": bucket, "objects": objects, "bytes": nbytes})


def main(a):
    try:
        if len(a) in (6, 7) and a[1] == "manifests":
            cmd_manifests(a[2], a[3], int(a[4]), int(a[5]), *a[6:])
        elif len(a) == 7 and a[1] == "tags":
            cmd_tags(a[2], a[3], int(a[4]), int(a[5]), int(a[6]))
        elif len(a) == 7 and a[1] == "smallpush":
            cmd_smallpush(a[2], a[3], int(a[4]), int(a[5]), float(a[6]))
        elif len(a) == 8 and a[1] == "pages":
            cmd_pages(a[2], a[3], a[4], int(a[5]), int(a[6]), int(a[7]))
        elif len(a) == 5 and a[1] == "s3":
            cmd_s3(a[2], a[3], a[4])
        else:
            sys.exit(__doc__)
    except ValueError as e:
        sys.exit("scaleout.py: %s\n%s" % (e, __doc__))


if __name__ == "__main__":
    main(sys.argv)

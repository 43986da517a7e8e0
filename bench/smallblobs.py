#!/usr/bin/env python3
"""Helper for bench/registry-core.sh (standard library only).

  smallblobs.py push  HOST:PORT REPO COUNT SIZE
      Push COUNT distinct random blobs of SIZE bytes, one after another, over
      ONE keep-alive HTTP/1.1 connection: POST /v2/REPO/blobs/uploads/ then
      PUT <Location>?digest=... with the blob as body. The blobs are generated
      before the clock starts. Prints "<blobs/s> <seconds> <errors>".

  smallblobs.py manifest HOST:PORT REPO TAG
      Push a small OCI image (config blob + one 1 KiB layer) and its manifest
      (Content-Type application/vnd.oci.image.manifest.v1+json) by TAG.
      Prints the manifest digest.
"""

import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def conn_for(hostport):
    host, port = hostport.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        sys.exit("smallblobs.py: refusing a non-loopback address: " + host)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def with_digest(location, digest):
    """Turn a Location (absolute or relative, maybe with a query) into a path
    with ?digest= / &digest= appended."""
    u = urllib.parse.urlsplit(location)
    path = u.path
    q = u.query
    sep = "&" if q else ""
    return path + "?" + q + sep + "digest=" + urllib.parse.quote(digest, safe=":")


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()  # always drain, so the connection can be reused
    return r.status, r.getheader("Location"), data


def push_blob(conn, repo, blob):
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    st, loc, data = request(conn, "POST", "/v2/%s/blobs/uploads/" % repo,
                            body=b"", headers={"Content-Length": "0"})
    if st != 202 or not loc:
        return digest, "POST %d %s" % (st, data[:200])
    st, _, data = request(conn, "PUT", with_digest(loc, digest), body=blob,
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Length": str(len(blob))})
    if st != 201:
        return digest, "PUT %d %s" % (st, data[:200])
    return digest, None


def cmd_push(hostport, repo, count, size):
    blobs = [os.urandom(size) for _ in range(count)]
    conn = conn_for(hostport)
    errors = 0
    first_error = None
    t0 = time.perf_counter()
    for b in blobs:
        _, err = push_blob(conn, repo, b)
        if err:
            errors += 1
            first_error = first_error or err
    dt = time.perf_counter() - t0
    conn.close()
    if first_error:
        print("first error: " + first_error, file=sys.stderr)
    print("%.1f %.3f %d" % (count / dt, dt, errors))


def cmd_manifest(hostport, repo, tag):
    conn = conn_for(hostport)
    layer = os.urandom(1024)
    layer_digest, err = push_blob(conn, repo, layer)
    if err:
        sys.exit("layer push failed: " + err)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }).encode()
    config_digest, err = push_blob(conn, repo, config)
    if err:
        sys.exit("config push failed: " + err)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }).encode()
    st, _, data = request(conn, "PUT", "/v2/%s/manifests/%s" % (repo, tag),
                          body=manifest,
                          headers={"Content-Type": OCI_MANIFEST,
                                   "Content-Length": str(len(manifest))})
    if st != 201:
        sys.exit("manifest PUT: HTTP %d %s" % (st, data[:300]))
    # Sanity check: GET it back with the OCI Accept header.
    st, _, data = request(conn, "GET", "/v2/%s/manifests/%s" % (repo, tag),
                          headers={"Accept": OCI_MANIFEST})
    if st != 200 or data != manifest:
        sys.exit("manifest GET back: HTTP %d, %d bytes" % (st, len(data)))
    conn.close()
    print("sha256:" + hashlib.sha256(manifest).hexdigest())


def main(argv):
    if len(argv) == 6 and argv[1] == "push":
        cmd_push(argv[2], argv[3], int(argv[4]), int(argv[5]))
    elif len(argv) == 5 and argv[1] == "manifest":
        cmd_manifest(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)

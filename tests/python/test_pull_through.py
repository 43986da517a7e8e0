"""ECR's pull-through cache against a real upstream: CNCF Distribution
(`/usr/bin/docker-registry`, Debian's `docker-registry` package) on loopback,
and a small proxy in front of it that demands Docker's token flow, can answer
429 and can corrupt what it serves. Images are pushed to the upstream with
skopeo and pulled through Berth with skopeo and docker; the rule operations
are driven with boto3 and the aws CLI."""

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import socketserver
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, Berth, free_port

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"])
INTERVAL = 5  # --pull-through-interval, seconds
PROXY_USER, PROXY_PASS = "ptc-user", "ptc-pass"


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


# ---- the upstream -----------------------------------------------------------


class Distribution:
    """`docker-registry serve` on 127.0.0.1 with its own config and storage."""

    def __init__(self, tmp: Path, proxy_of=None):
        self.dir = tmp
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self.storage = tmp / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.addr},
        }
        if proxy_of:
            config["proxy"] = {"remoteurl": proxy_of}
        self.config = tmp / "config.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen(
            ["/usr/bin/docker-registry", "serve", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start: " + (self.dir / "registry.log").read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()


class Proxy:
    """An upstream in front of `target`: it demands a bearer token from its own
    realm (given for the Basic credentials PROXY_USER/PROXY_PASS), counts
    requests by path, and, by `mode`, answers 429 / 503 or flips a byte of
    every blob (`corrupt-blobs`) or manifest (`corrupt-manifests`)."""

    def __init__(self, target):
        self.target = target
        self.mode = "pass"
        self.counts = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path = self.path
                if path.startswith("/token"):
                    proxy.bump(self.command, "/token")
                    want = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASS}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                    return self._send(200, json.dumps({"token": "tok-1", "expires_in": 300}).encode())
                if proxy.mode == "429":
                    return self._send(429, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}')
                if proxy.mode == "503":
                    return self._send(503, b"down")
                if self.headers.get("Authorization") != "Bearer tok-1":
                    m = re.match(r"/v2/(.+)/(manifests|blobs)/", path)
                    scope = f',scope="repository:{m.group(1)}:pull"' if m else ""
                    realm = f"http://127.0.0.1:{proxy.port}/token"
                    return self._send(
                        401,
                        b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                        [("WWW-Authenticate", f'Bearer realm="{realm}",service="proxy"{scope}')],
                    )
                proxy.bump(self.command, path.split("?")[0])
                req = urllib.request.Request(proxy.target + path, method=self.command)
                if self.headers.get("Accept"):
                    req.add_header("Accept", self.headers["Accept"])
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, body, hdrs = r.status, r.read(), r.headers
                except urllib.error.HTTPError as e:
                    status, body, hdrs = e.code, e.read(), e.headers
                if status == 200 and body and (
                    (proxy.mode == "corrupt-blobs" and "/blobs/" in path)
                    or (proxy.mode == "corrupt-manifests" and "/manifests/" in path)
                ):
                    body = body[:-2] + bytes([body[-2] ^ 1]) + body[-1:]
                keep = [(k, hdrs[k]) for k in ("Content-Type", "Docker-Content-Digest") if hdrs.get(k)]
                self._send(status, body if self.command != "HEAD" else b"", keep)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bump(self, method, path):
        with self.lock:
            self.counts[(method, path)] = self.counts.get((method, path), 0) + 1

    def count(self, method, path):
        with self.lock:
            return self.counts.get((method, path), 0)

    def stop(self):
        self.server.shutdown()


# ---- image fixtures ---------------------------------------------------------


def layer(seed, size, compress=True):
    """A tar (gzipped unless `compress` is false) with one file of `size`
    pseudo-random bytes: (blob, diff_id)."""
    data = hashlib.shake_256(seed.encode()).digest(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo(f"data-{seed}")
        info.size = len(data)
        info.mtime = 0
        t.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    return (gzip.compress(tar, mtime=0) if compress else tar), sha256(tar)


def write_blob(layout, b):
    d = layout / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha256(b).hexdigest()).write_bytes(b)
    return {"size": len(b), "digest": sha256(b)}


def image(layout, seed, sizes=(2000,), arch="amd64", compress=True):
    """Write an image (config + layers + manifest) into an OCI layout; its manifest descriptor."""
    layers = [layer(f"{seed}-{i}", n, compress) for i, n in enumerate(sizes)]
    media_type = OCI_LAYER if compress else "application/vnd.oci.image.layer.v1.tar"
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **write_blob(layout, config)},
            "layers": [{"mediaType": media_type, **write_blob(layout, b)} for b, _ in layers],
        }
    ).encode()
    return {"mediaType": OCI_MANIFEST, **write_blob(layout, manifest), "platform": {"architecture": arch, "os": "linux"}}


def push(upstream_addr, repo, tag, seed, sizes=(2000,), multi=False, compress=True):
    """Build an image (or a two-platform index) and push it to the upstream
    with skopeo; the digest of its top manifest."""
    with tempfile.TemporaryDirectory() as d:
        layout = Path(d)
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        if multi:
            children = [image(layout, f"{seed}-{a}", sizes, a) for a in ("amd64", "arm64")]
            index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
            top = {"mediaType": OCI_INDEX, **write_blob(layout, index)}
        else:
            top = image(layout, seed, sizes, compress=compress)
            top.pop("platform")
        top["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{layout}:{tag}", f"docker://{upstream_addr}/{repo}:{tag}"],
            check=True, capture_output=True, timeout=120,
        )
        return top["digest"]


# ---- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    d = Distribution(tmp_path_factory.mktemp("upstream"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def proxy(upstream):
    p = Proxy(upstream.url)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def berth(tmp_path_factory):
    server = Berth(tmp_path_factory.mktemp("berth-ptc"), extra_args=["--pull-through-interval", f"{INTERVAL}s"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ecr(berth):
    return berth.client()


@pytest.fixture(scope="module")
def secret_arn(berth):
    out = subprocess.run(
        [berth.bin, "secrets", *berth.store_args, "put", "ecr-pullthroughcache/proxy",
         "--username", PROXY_USER, "--password-stdin"],
        input=PROXY_PASS + "\n", env=berth.env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    arn = json.loads(out.stdout)["ARN"]
    assert arn == f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:ecr-pullthroughcache/proxy"
    return arn


@pytest.fixture(scope="module")
def rules(ecr, upstream, proxy, secret_arn):
    """`dist/…` from Distribution directly; `prox/…` through the token proxy."""
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="dist", upstreamRegistryUrl=upstream.url)
    ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix="prox", upstreamRegistryUrl=proxy.url, credentialArn=secret_arn
    )


class V2:
    def __init__(self, berth, ecr):
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        self.user, self.password = base64.b64decode(token).decode().split(":", 1)
        self.base = berth.endpoint
        self.addr = berth.addr

    def get(self, path, **kw):
        kw.setdefault("timeout", 60)
        return requests.get(f"{self.base}/v2/{path}", auth=(self.user, self.password), **kw)

    def manifest(self, repo, ref):
        return self.get(f"{repo}/manifests/{ref}", headers={"Accept": ACCEPT})

    def skopeo(self, *args, check=True):
        return subprocess.run(
            ["skopeo", *args], check=check, capture_output=True, text=True, timeout=180,
        )

    def src_creds(self):
        return ["--src-tls-verify=false", "--src-creds", f"{self.user}:{self.password}"]


@pytest.fixture(scope="module")
def v2(berth, ecr, rules):
    return V2(berth, ecr)


def wait_for(fn, timeout=40, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def cached_digests(ecr, repo):
    try:
        return {d["imageDigest"]: d.get("imageTags", []) for d in ecr.describe_images(repositoryName=repo)["imageDetails"]}
    except ecr.exceptions.RepositoryNotFoundException:
        return {}


def error_code(call, **kw):
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def metrics(berth):
    return requests.get(f"{berth.endpoint}/metrics", timeout=10).text


def metric(text, name, kind):
    m = re.search(rf'^{name}_total\{{kind="{kind}"\}} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


# ---- the rules API ----------------------------------------------------------


def test_rule_operations_and_errors(ecr, berth, upstream, secret_arn):
    c = ecr
    out = c.create_pull_through_cache_rule(
        ecrRepositoryPrefix="ops-a/", upstreamRegistryUrl=upstream.url, upstreamRepositoryPrefix="library"
    )
    assert out["ecrRepositoryPrefix"] == "ops-a"
    assert out["upstreamRegistryUrl"] == upstream.url
    assert out["upstreamRepositoryPrefix"] == "library"
    assert out["registryId"] == ACCOUNT and "createdAt" in out
    assert "upstreamRegistry" not in out  # not a registry ECR names
    quay = c.create_pull_through_cache_rule(ecrRepositoryPrefix="ops-quay", upstreamRegistryUrl="quay.io")
    assert quay["upstreamRegistry"] == "quay" and "upstreamRepositoryPrefix" not in quay  # not given, as ECR shows it

    assert error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-a", upstreamRegistryUrl="quay.io")[0] == \
        "PullThroughCacheRuleAlreadyExistsException"
    raw = berth.client(validate=False)
    code, msg = error_code(raw.create_pull_through_cache_rule, ecrRepositoryPrefix="x", upstreamRegistryUrl="quay.io")
    assert code == "InvalidParameterException" and "greater than or equal to 2" in msg, msg
    code, msg = error_code(raw.create_pull_through_cache_rule, ecrRepositoryPrefix="a" * 31, upstreamRegistryUrl="quay.io")
    assert code == "InvalidParameterException" and "less than or equal to 30" in msg, msg
    code, msg = error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="Bad_Prefix", upstreamRegistryUrl="quay.io")
    assert code == "InvalidParameterException" and "ecrRepositoryPrefix" in msg and "regular expression" in msg, msg
    code, msg = error_code(
        c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="quay.io", upstreamRepositoryPrefix="-x"
    )
    assert code == "InvalidParameterException" and "upstreamRepositoryPrefix" in msg, msg
    assert error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="ftp://quay.io")[0] == \
        "UnsupportedUpstreamRegistryException"
    code, msg = error_code(
        c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="quay.io", upstreamRegistry="docker-hub"
    )
    assert code == "UnsupportedUpstreamRegistryException", msg
    assert error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b",
                      upstreamRegistryUrl="123456789012.dkr.ecr.us-east-1.amazonaws.com")[0] == "UnsupportedUpstreamRegistryException"
    code, msg = error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="quay.io/v2/x")
    assert code == "InvalidParameterException", msg
    # Docker Hub, as in ECR, only with credentials.
    code, msg = error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="registry-1.docker.io")
    assert code == "InvalidParameterException" and "credentialArn" in msg, msg
    # A setting Berth would not act on is refused by name, never stored.
    code, msg = error_code(
        c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="quay.io",
        customRoleArn="arn:aws:iam::123456789012:role/ecr-ptc",
    )
    assert code == "InvalidParameterException" and "customRoleArn" in msg, msg
    missing = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:ecr-pullthroughcache/nope"
    code, msg = error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="quay.io",
                           credentialArn=missing)
    assert code == "SecretNotFoundException" and missing in msg, msg
    other = f"arn:aws:secretsmanager:{REGION}:999999999999:secret:ecr-pullthroughcache/proxy"
    assert error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="quay.io",
                      credentialArn=other)[0] == "UnableToAccessSecretException"
    code, msg = error_code(c.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-b", upstreamRegistryUrl="quay.io",
                           credentialArn="arn:aws:secretsmanager:us-east-1:123456789012:secret:other/thing-abcdef")
    assert code == "InvalidParameterException" and "credentialArn" in msg, msg
    hub = c.create_pull_through_cache_rule(ecrRepositoryPrefix="ops-hub", upstreamRegistryUrl="registry-1.docker.io",
                                           credentialArn=secret_arn)
    assert hub["upstreamRegistry"] == "docker-hub" and hub["credentialArn"] == secret_arn
    root = c.create_pull_through_cache_rule(ecrRepositoryPrefix="ROOT", upstreamRegistryUrl=upstream.url)
    assert root["ecrRepositoryPrefix"] == "ROOT"

    # Describe: by name, unknown names, paging.
    got = c.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["ops-a", "ops-quay"])["pullThroughCacheRules"]
    assert [r["ecrRepositoryPrefix"] for r in got] == ["ops-a", "ops-quay"]
    assert got[0]["upstreamRepositoryPrefix"] == "library" and "updatedAt" in got[0]
    assert error_code(c.describe_pull_through_cache_rules, ecrRepositoryPrefixes=["ops-none"])[0] == \
        "PullThroughCacheRuleNotFoundException"
    pages = list(c.get_paginator("describe_pull_through_cache_rules").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) >= 2 and all(len(p["pullThroughCacheRules"]) <= 2 for p in pages)
    names = [r["ecrRepositoryPrefix"] for p in pages for r in p["pullThroughCacheRules"]]
    assert names == sorted(names) and len(names) == len(set(names))
    assert {"ops-a", "ops-quay", "ops-hub", "ROOT"} <= set(names)
    code, _ = error_code(raw.describe_pull_through_cache_rules, nextToken="garbage")
    assert code == "InvalidParameterException"

    # Update: the credential.
    up = c.update_pull_through_cache_rule(ecrRepositoryPrefix="ops-quay", credentialArn=secret_arn)
    assert up["credentialArn"] == secret_arn and "updatedAt" in up
    assert c.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["ops-quay"])["pullThroughCacheRules"][0][
        "credentialArn"] == secret_arn
    assert error_code(c.update_pull_through_cache_rule, ecrRepositoryPrefix="ops-none", credentialArn=secret_arn)[0] == \
        "PullThroughCacheRuleNotFoundException"
    assert error_code(c.update_pull_through_cache_rule, ecrRepositoryPrefix="ops-quay", credentialArn=missing)[0] == \
        "SecretNotFoundException"
    assert error_code(c.update_pull_through_cache_rule, ecrRepositoryPrefix="ops-quay", credentialArn=secret_arn,
                      customRoleArn="arn:aws:iam::123456789012:role/r")[0] == "InvalidParameterException"

    # Validate: a live upstream is valid; a dead port is not, and says why.
    v = c.validate_pull_through_cache_rule(ecrRepositoryPrefix="ops-a")
    assert v["isValid"] is True and "failure" not in v and v["upstreamRegistryUrl"] == upstream.url
    c.create_pull_through_cache_rule(ecrRepositoryPrefix="ops-dead", upstreamRegistryUrl=f"http://127.0.0.1:{free_port()}")
    v = c.validate_pull_through_cache_rule(ecrRepositoryPrefix="ops-dead")
    assert v["isValid"] is False and "cannot be reached" in v["failure"], v
    assert error_code(c.validate_pull_through_cache_rule, ecrRepositoryPrefix="ops-none")[0] == \
        "PullThroughCacheRuleNotFoundException"

    # Delete.
    for p in ("ops-a", "ops-quay", "ops-hub", "ops-dead", "ROOT"):
        gone = c.delete_pull_through_cache_rule(ecrRepositoryPrefix=p)
        assert gone["ecrRepositoryPrefix"] == p
    assert error_code(c.delete_pull_through_cache_rule, ecrRepositoryPrefix="ops-a")[0] == "PullThroughCacheRuleNotFoundException"

    # IAM: the operations are authorized like every other.
    _, _, nobody = berth.user_with_policy(None)
    assert error_code(nobody.describe_pull_through_cache_rules)[0] == "AccessDeniedException"
    assert error_code(nobody.create_pull_through_cache_rule, ecrRepositoryPrefix="ops-x", upstreamRegistryUrl="quay.io")[0] == \
        "AccessDeniedException"


def test_rule_limit_is_50(berth, ecr):
    existing = len(ecr.describe_pull_through_cache_rules()["pullThroughCacheRules"])
    made = []
    for i in range(50 - existing):
        made.append(f"lim-{i}")
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=made[-1], upstreamRegistryUrl="quay.io")
    code, msg = error_code(ecr.create_pull_through_cache_rule, ecrRepositoryPrefix="lim-over", upstreamRegistryUrl="quay.io")
    assert code == "LimitExceededException" and "50" in msg, msg
    for p in made:
        ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix=p)


def test_rule_operations_with_the_aws_cli(berth, upstream):
    # The aws CLI (v1) fetches any parameter value that starts with http://
    # ("remote parameter files"), so a URL goes in through --cli-input-json.
    create = json.dumps({"ecrRepositoryPrefix": "cli-rule", "upstreamRegistryUrl": upstream.url})
    out = berth.aws("ecr", "create-pull-through-cache-rule", "--cli-input-json", create)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ecrRepositoryPrefix"] == "cli-rule"
    out = berth.aws("ecr", "describe-pull-through-cache-rules", "--ecr-repository-prefixes", "cli-rule")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pullThroughCacheRules"][0]["upstreamRegistryUrl"] == upstream.url
    out = berth.aws("ecr", "validate-pull-through-cache-rule", "--ecr-repository-prefix", "cli-rule")
    assert out.returncode == 0 and json.loads(out.stdout)["isValid"] is True, out.stderr
    out = berth.aws("ecr", "create-pull-through-cache-rule", "--cli-input-json", create)
    assert out.returncode != 0 and "PullThroughCacheRuleAlreadyExistsException" in out.stderr, out.stderr
    out = berth.aws("ecr", "delete-pull-through-cache-rule", "--ecr-repository-prefix", "cli-rule")
    assert out.returncode == 0, out.stderr
    out = berth.aws("ecr", "delete-pull-through-cache-rule", "--ecr-repository-prefix", "cli-rule")
    assert out.returncode != 0 and "PullThroughCacheRuleNotFoundException" in out.stderr, out.stderr


# ---- pulls ------------------------------------------------------------------


def test_skopeo_pull_is_byte_for_byte_and_cached(v2, ecr, berth, upstream):
    digest = push(upstream.addr, "team/app", "v1", "app-v1", sizes=(3000, 200_000))
    with tempfile.TemporaryDirectory() as out:
        v2.skopeo("copy", "--quiet", *v2.src_creds(), f"docker://{v2.addr}/dist/team/app:v1", f"oci:{out}:v1")
    raw_up = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{upstream.addr}/team/app:v1"],
                            check=True, capture_output=True).stdout
    raw_berth = v2.skopeo("inspect", "--raw", "--tls-verify=false", "--creds", f"{v2.user}:{v2.password}",
                          f"docker://{v2.addr}/dist/team/app:v1").stdout.encode()
    assert raw_berth == raw_up and sha256(raw_up) == digest
    m = json.loads(raw_up)
    for d in [m["config"]] + m["layers"]:
        up = requests.get(f"{upstream.url}/v2/team/app/blobs/{d['digest']}", timeout=30).content
        assert v2.get(f"dist/team/app/blobs/{d['digest']}").content == up
    # Created on first use with ECR's defaults; the image is stored through the push path.
    repo = ecr.describe_repositories(repositoryNames=["dist/team/app"])["repositories"][0]
    assert repo["imageTagMutability"] == "MUTABLE"
    assert repo["encryptionConfiguration"]["encryptionType"] == "AES256"
    wait_for(lambda: cached_digests(ecr, "dist/team/app").get(digest) == ["v1"], what="the image cached")
    for d in [m["config"]] + m["layers"]:
        assert berth.blob_stored(d["digest"])
    text = metrics(berth)
    assert metric(text, "berth_pull_through_misses", "manifest") >= 1
    assert metric(text, "berth_pull_through_misses", "blob") >= 1


def test_docker_pull(v2, ecr, upstream, tmp_path):
    digest = push(upstream.addr, "dockerapp", "v1", "docker-v1", sizes=(5000,))
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    env = dict(os.environ, DOCKER_CONFIG=str(cfg))
    login = subprocess.run(["docker", "login", "-u", v2.user, "--password-stdin", v2.addr], input=v2.password,
                           env=env, capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, login.stderr
    ref = f"{v2.addr}/dist/dockerapp:v1"
    try:
        pull = subprocess.run(["docker", "pull", ref], env=env, capture_output=True, text=True, timeout=180)
        assert pull.returncode == 0, pull.stderr + pull.stdout
        assert digest in pull.stdout, pull.stdout
        inspect = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", ref], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert f"dist/dockerapp@{digest}" in inspect.stdout, inspect.stdout
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], env=env, capture_output=True, timeout=60)
    wait_for(lambda: digest in cached_digests(ecr, "dist/dockerapp"), what="the image cached")


def test_multi_arch_index_is_cached_with_every_child(v2, ecr, upstream):
    digest = push(upstream.addr, "multi", "v1", "multi-v1", sizes=(1500,), multi=True)
    # Only the index is pulled: the children and their blobs are cached all the same.
    r = v2.manifest("dist/multi", "v1")
    assert r.status_code == 200 and sha256(r.content) == digest
    index = json.loads(r.content)
    children = {c["digest"] for c in index["manifests"]}
    assert len(children) == 2
    cached = wait_for(lambda: (lambda c: c if {digest, *children} <= set(c) else None)(cached_digests(ecr, "dist/multi")),
                      what="the index and its children cached")
    assert cached[digest] == ["v1"]
    # And a client pulling every platform gets identical bytes.
    with tempfile.TemporaryDirectory() as out:
        v2.skopeo("copy", "--quiet", "--all", "--preserve-digests", *v2.src_creds(),
                  f"docker://{v2.addr}/dist/multi:v1", f"oci:{out}:v1")
        copied = json.loads(Path(out, "index.json").read_text())["manifests"][0]["digest"]
        assert copied == digest


def test_pull_by_digest(v2, ecr, upstream):
    digest = push(upstream.addr, "bydigest", "v1", "bydigest-v1")
    r = v2.manifest("dist/bydigest", digest)
    assert r.status_code == 200 and sha256(r.content) == digest
    wait_for(lambda: digest in cached_digests(ecr, "dist/bydigest"), what="cached by digest")
    assert cached_digests(ecr, "dist/bydigest")[digest] == []


def test_unknown_upstream_image_is_manifest_unknown(v2, ecr):
    r = v2.manifest("dist/does-not-exist", "v1")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", r.text
    # Names no rule covers are untouched by the cache.
    r = v2.manifest("elsewhere/x", "v1")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN", r.text


def test_token_flow_with_stored_credentials(v2, ecr, upstream, proxy):
    digest = push(upstream.addr, "secured", "v1", "secured-v1")
    with tempfile.TemporaryDirectory() as out:
        v2.skopeo("copy", "--quiet", *v2.src_creds(), f"docker://{v2.addr}/prox/secured:v1", f"oci:{out}:v1")
    assert proxy.count("GET", "/token") >= 1
    wait_for(lambda: digest in cached_digests(ecr, "prox/secured"), what="cached through the token flow")


def test_a_tag_moved_upstream_is_seen_only_after_the_interval(v2, ecr, upstream):
    first = push(upstream.addr, "moving", "latest", "moving-1")
    second = push(upstream.addr, "moving", "staging", "moving-2")
    assert second != first
    assert sha256(v2.manifest("dist/moving", "latest").content) == first
    wait_for(lambda: first in cached_digests(ecr, "dist/moving"), what="first cached")
    # Move the tag upstream (a manifest PUT: no waiting on a push).
    staged = requests.get(f"{upstream.url}/v2/moving/manifests/staging", headers={"Accept": ACCEPT}, timeout=30)
    moved = requests.put(f"{upstream.url}/v2/moving/manifests/latest", data=staged.content,
                         headers={"Content-Type": staged.headers["Content-Type"]}, timeout=30)
    assert moved.status_code == 201, moved.text
    # Within the interval: the cached tag, without asking the upstream.
    assert sha256(v2.manifest("dist/moving", "latest").content) == first
    time.sleep(INTERVAL + 0.5)
    assert sha256(v2.manifest("dist/moving", "latest").content) == second
    wait_for(lambda: cached_digests(ecr, "dist/moving").get(second) == ["latest"], what="the new tag cached")


def test_upstream_429_serves_the_cached_copy(v2, ecr, berth, upstream, proxy):
    digest = push(upstream.addr, "limited", "v1", "limited-v1")
    assert sha256(v2.manifest("prox/limited", "v1").content) == digest
    wait_for(lambda: digest in cached_digests(ecr, "prox/limited"), what="cached")
    before = metric(metrics(berth), "berth_pull_through_stale_served", "manifest")
    proxy.mode = "429"
    try:
        time.sleep(INTERVAL + 0.5)
        r = v2.manifest("prox/limited", "v1")
        assert r.status_code == 200 and sha256(r.content) == digest
        m = json.loads(r.content)
        assert v2.get(f"prox/limited/blobs/{m['layers'][0]['digest']}").status_code == 200
        # A miss has no cached copy: the upstream's refusal shows.
        miss = v2.manifest("prox/not-cached", "v1")
        assert miss.status_code == 502 and miss.json()["errors"][0]["code"] == "UNAVAILABLE", miss.text
    finally:
        proxy.mode = "pass"
    assert metric(metrics(berth), "berth_pull_through_stale_served", "manifest") > before


def test_tampered_blobs_and_manifests_are_refused_and_not_cached(v2, ecr, berth, upstream, proxy):
    digest = push(upstream.addr, "tampered", "v1", "tampered-v1", sizes=(100_000,))
    m = json.loads(requests.get(f"{upstream.url}/v2/tampered/manifests/v1", headers={"Accept": ACCEPT}, timeout=30).content)
    layer_digest = m["layers"][0]["digest"]
    proxy.mode = "corrupt-blobs"
    try:
        with tempfile.TemporaryDirectory() as out:
            r = v2.skopeo("copy", "--quiet", *v2.src_creds(), f"docker://{v2.addr}/prox/tampered:v1", f"oci:{out}:v1",
                          check=False)
        assert r.returncode != 0
        # Fetched directly: the stream is cut before its last bytes, never complete and wrong.
        try:
            body = v2.get(f"prox/tampered/blobs/{layer_digest}").content
            assert sha256(body) != layer_digest
        except requests.RequestException:
            pass  # the stream was cut before its last bytes
        time.sleep(3)
        assert not berth.blob_stored(layer_digest)
        assert digest not in cached_digests(ecr, "prox/tampered")
        assert metric(metrics(berth), "berth_pull_through_refused", "blob") >= 1

        proxy.mode = "corrupt-manifests"
        digest2 = push(upstream.addr, "tampered-m", "v1", "tampered-m-v1")
        r = v2.manifest("prox/tampered-m", digest2)
        assert r.status_code == 502 and r.json()["errors"][0]["code"] == "DIGEST_INVALID", r.text
        r = v2.manifest("prox/tampered-m", "v1")  # the upstream's Docker-Content-Digest is checked too
        assert r.status_code == 502 and r.json()["errors"][0]["code"] == "DIGEST_INVALID", r.text
        assert cached_digests(ecr, "prox/tampered-m") == {}
    finally:
        proxy.mode = "pass"


def test_concurrent_pulls_fetch_once(v2, ecr, upstream, proxy):
    push(upstream.addr, "flight", "v1", "flight-v1", sizes=(4 << 20,))
    m = json.loads(requests.get(f"{upstream.url}/v2/flight/manifests/v1", headers={"Accept": ACCEPT}, timeout=30).content)
    layer_digest = m["layers"][0]["digest"]
    expected = requests.get(f"{upstream.url}/v2/flight/blobs/{layer_digest}", timeout=30).content

    def pull(_):
        return v2.get(f"prox/flight/blobs/{layer_digest}").content

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(pull, range(8)))
    assert all(b == expected for b in bodies)
    assert proxy.count("GET", f"/v2/flight/blobs/{layer_digest}") == 1
    with ThreadPoolExecutor(6) as pool:
        manifests = list(pool.map(lambda _: v2.manifest("prox/flight", "v1").content, range(6)))
    assert len(set(manifests)) == 1
    assert proxy.count("GET", "/v2/flight/manifests/v1") == 1


def test_pulls_need_batch_import_upstream_image(berth, v2, ecr, upstream):
    push(upstream.addr, "guarded", "v1", "guarded-v1")
    pull_only = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                                     "ecr:GetDownloadUrlForLayer", "ecr:CreateRepository"],
                       "Resource": "*"}],
    }
    _, _, client = berth.user_with_policy(pull_only)
    user_v2 = V2(berth, client)
    r = user_v2.manifest("dist/guarded", "v1")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
    assert "ecr:BatchImportUpstreamImage" in r.json()["errors"][0]["message"]
    assert cached_digests(ecr, "dist/guarded") == {}
    # Importing, but not creating the repository it would need.
    no_create = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                                     "ecr:GetDownloadUrlForLayer", "ecr:BatchImportUpstreamImage"],
                       "Resource": "*"}],
    }
    _, _, client = berth.user_with_policy(no_create)
    r = V2(berth, client).manifest("dist/guarded", "v1")
    assert r.status_code == 403 and "ecr:CreateRepository" in r.json()["errors"][0]["message"], r.text
    # With both, the pull fetches; once the repository exists, import alone suffices.
    both = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                                     "ecr:GetDownloadUrlForLayer", "ecr:BatchImportUpstreamImage",
                                                     "ecr:CreateRepository"], "Resource": "*"}],
    }
    _, _, client = berth.user_with_policy(both)
    assert V2(berth, client).manifest("dist/guarded", "v1").status_code == 200


def test_stopped_upstream_cache_still_serves(tmp_path, berth, ecr, v2):
    up = Distribution(tmp_path / "up2")
    try:
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="gone", upstreamRegistryUrl=up.url)
        digest = push(up.addr, "app", "v1", "gone-v1", sizes=(50_000,))
        with tempfile.TemporaryDirectory() as out:
            v2.skopeo("copy", "--quiet", *v2.src_creds(), f"docker://{v2.addr}/gone/app:v1", f"oci:{out}:v1")
        wait_for(lambda: digest in cached_digests(ecr, "gone/app"), what="cached")
    finally:
        up.stop()
    time.sleep(INTERVAL + 0.5)  # the tag is due for a re-check, which fails
    with tempfile.TemporaryDirectory() as out:
        v2.skopeo("copy", "--quiet", *v2.src_creds(), f"docker://{v2.addr}/gone/app:v1", f"oci:{out}:v1")
        assert json.loads(Path(out, "index.json").read_text())["manifests"][0]["digest"] == digest
    r = v2.manifest("gone/app", digest)
    assert r.status_code == 200
    miss = v2.manifest("gone/other", "v1")
    assert miss.status_code == 502 and miss.json()["errors"][0]["code"] == "UNAVAILABLE", miss.text


def vm_hwm(pid):
    """The peak resident memory of process `pid`, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_large_layer_streams_through_without_sitting_in_memory(v2, berth, upstream):
    size = 192 << 20
    push(upstream.addr, "big", "v1", "big-v1", sizes=(size,), compress=False)
    m = json.loads(requests.get(f"{upstream.url}/v2/big/manifests/v1", headers={"Accept": ACCEPT}, timeout=30).content)
    desc = m["layers"][0]
    before = vm_hwm(berth.proc.pid)
    h, n = hashlib.sha256(), 0
    with v2.get(f"dist/big/blobs/{desc['digest']}", stream=True, timeout=300) as r:
        assert r.status_code == 200, r.text
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
            n += len(chunk)
    assert n == desc["size"] and "sha256:" + h.hexdigest() == desc["digest"]
    grew = vm_hwm(berth.proc.pid) - before
    assert grew < 64 << 20, f"the server's peak memory grew by {grew >> 20} MiB for a {size >> 20} MiB layer"
    assert berth.blob_stored(desc["digest"])
    # The second pull is the cache's.
    r = v2.get(f"dist/big/blobs/{desc['digest']}", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.content) == 100


def test_a_pull_through_cache_template_sets_the_cached_repository(v2, ecr, upstream):
    ecr.create_repository_creation_template(
        prefix="dist/templated", appliedFor=["PULL_THROUGH_CACHE"], imageTagMutability="MUTABLE",
        resourceTags=[{"Key": "cache", "Value": "dist"}],
        lifecyclePolicy=json.dumps({"rules": [{"rulePriority": 1, "selection": {
            "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20}, "action": {"type": "expire"}}]}),
    )
    try:
        digest = push(upstream.addr, "templated/app", "v1", "templated-v1")
        r = v2.manifest("dist/templated/app", "v1")
        assert r.status_code == 200 and sha256(r.content) == digest
        repo = ecr.describe_repositories(repositoryNames=["dist/templated/app"])["repositories"][0]
        assert ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"] == [{"Key": "cache", "Value": "dist"}]
        policy = json.loads(ecr.get_lifecycle_policy(repositoryName="dist/templated/app")["lifecyclePolicyText"])
        assert policy["rules"][0]["selection"]["countNumber"] == 20
    finally:
        ecr.delete_repository_creation_template(prefix="dist/templated")

"""Lifecycle policies end to end, with boto3, the /v2/ API and the `berth gc` /
`berth lifecycle` commands: Put/Get/Delete, previews (API and CLI), execution
(CLI, also under faketime), the audit trail, garbage collection of what the
expired images leave behind, manifest lists and referrers, and every
invalid-policy vector of /work/shared/docs/ecr-api.md §4.3.

Tests that execute a policy or collect garbage get a server of their own
(`solo`): garbage collection is registry-wide, and the server evaluates a
newly stored policy on its own at its next lifecycle check (one minute after
start), so those tests keep far inside that minute. The other tests share the
module's server and only preview, or store policies on empty repositories.
"""

import datetime
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import ACCOUNT, Berth
from test_ecr_api import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    constraint_msg,
    error,
    not_found_msg,
    sha256,
    upload_blob,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIG_TYPE = "application/vnd.example.signature.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX])
PREFIX = "Lifecycle policy validation failure: "
UTC = datetime.timezone.utc


# ---- helpers -----------------------------------------------------------------


@pytest.fixture
def solo(tmp_path):
    """A server of the test's own (see the module docstring)."""
    server = Berth(tmp_path, extra_args=["--gc-interval", "1h"])
    try:
        yield server
    finally:
        server.stop()


def strip(resp):
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


@dataclass
class Img:
    digest: str
    body: bytes
    media_type: str
    # Config and layers (none for an index), digest -> bytes.
    blobs: dict = field(default_factory=dict)


class Pusher:
    """Pushes images into one repository: blobs through the ECR layer API,
    image manifests through PutImage, indexes and referrers through /v2/."""

    def __init__(self, ecr, v2, repo):
        self.ecr, self.v2, self.repo = ecr, v2, repo
        self.uploaded = {}

    def blob(self, data: bytes):
        d = sha256(data)
        if d not in self.uploaded:
            upload_blob(self.ecr, self.repo, data)
            self.uploaded[d] = data
        return d

    def image(self, layers, tags=()):
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {"nonce": uuid.uuid4().hex}},
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": self.blob(config)},
            "layers": [{"mediaType": OCI_LAYER, "size": len(l), "digest": self.blob(l)} for l in layers],
        }
        body = json.dumps(manifest, indent=2).encode()
        img = Img(sha256(body), body, OCI_MANIFEST, {sha256(b): b for b in [config, *layers]})
        for tag in tags or [None]:
            args = dict(repositoryName=self.repo, imageManifest=body.decode(), imageManifestMediaType=OCI_MANIFEST)
            if tag is not None:
                args["imageTag"] = tag
            r = self.ecr.put_image(**args)
            assert r["image"]["imageId"]["imageDigest"] == img.digest
        time.sleep(0.005)  # distinct push times (milliseconds)
        return img

    def index(self, children, tag=None):
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": c.media_type,
                        "digest": c.digest,
                        "size": len(c.body),
                        "platform": {"architecture": arch, "os": "linux"},
                    }
                    for c, arch in zip(children, ["amd64", "arm64", "s390x", "ppc64le"])
                ],
            },
            indent=1,
        ).encode()
        img = Img(sha256(body), body, OCI_INDEX)
        self.v2.put_manifest(self.repo, tag or img.digest, body, OCI_INDEX)
        time.sleep(0.005)
        return img

    def referrer(self, subject, artifact_type, payload: bytes):
        empty = b"{}"
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {"mediaType": OCI_EMPTY, "digest": self.blob(empty), "size": len(empty)},
                "layers": [{"mediaType": artifact_type, "digest": self.blob(payload), "size": len(payload)}],
                "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.body)},
            }
        ).encode()
        img = Img(sha256(body), body, OCI_MANIFEST, {sha256(empty): empty, sha256(payload): payload})
        self.v2.put_manifest(self.repo, img.digest, body, OCI_MANIFEST)
        time.sleep(0.005)
        return img


class V2:
    """/v2/ with a token from GetAuthorizationToken."""

    def __init__(self, berth, ecr):
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        self.base = berth.endpoint + "/v2/"
        self.s = requests.Session()
        self.s.headers["Authorization"] = "Basic " + token

    def get_manifest(self, repo, ref):
        return self.s.get(f"{self.base}{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=10)

    def put_manifest(self, repo, ref, body, media_type):
        r = self.s.put(
            f"{self.base}{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type}, timeout=10
        )
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == sha256(body)

    def get_blob(self, repo, digest):
        return self.s.get(f"{self.base}{repo}/blobs/{digest}", timeout=10)

    def referrers(self, repo, digest):
        r = self.s.get(f"{self.base}{repo}/referrers/{digest}", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["manifests"]

    def assert_pullable(self, repo, img, ref=None):
        """The manifest (by `ref`, default its digest) and every blob, byte for byte."""
        r = self.get_manifest(repo, ref or img.digest)
        assert r.status_code == 200, (ref, img.digest, r.text)
        assert r.content == img.body
        assert r.headers["Docker-Content-Digest"] == img.digest
        assert r.headers["Content-Type"] == img.media_type
        for digest, data in img.blobs.items():
            b = self.get_blob(repo, digest)
            assert b.status_code == 200, (digest, b.text)
            assert sha256(b.content) == digest
            assert b.content == data

    def assert_manifest_unknown(self, repo, ref):
        r = self.get_manifest(repo, ref)
        assert r.status_code == 404, (ref, r.status_code, r.text)
        assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", r.text


def policy_text(*rules):
    """A policy document (indented, so never under the API's 100-character minimum)."""
    text = json.dumps({"rules": list(rules)}, indent=2)
    assert len(text) >= 100
    return text


def rule(priority, tag_status, count_type, count_number, unit=None, action=None, **selection):
    sel = {"tagStatus": tag_status, **selection, "countType": count_type, "countNumber": count_number}
    if unit is not None:
        sel["countUnit"] = unit
    return {
        "rulePriority": priority,
        "description": f"rule {priority}",
        "selection": sel,
        "action": action or {"type": "expire"},
    }


def run_preview(ecr, repo, text=None, stored=None):
    """StartLifecyclePolicyPreview (with `text`, or the stored policy `stored`),
    then GetLifecyclePolicyPreview until it is no longer IN_PROGRESS. Returns
    the first page of the COMPLETE preview."""
    args = dict(repositoryName=repo)
    if text is not None:
        args["lifecyclePolicyText"] = text
    started = ecr.start_lifecycle_policy_preview(**args)
    expected_text = text if text is not None else stored
    assert strip(started) == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "lifecyclePolicyText": expected_text,
        "status": "IN_PROGRESS",
    }
    deadline = time.monotonic() + 10
    while True:
        got = ecr.get_lifecycle_policy_preview(repositoryName=repo)
        if got["status"] != "IN_PROGRESS" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got["status"] == "COMPLETE", got
    assert got["registryId"] == ACCOUNT
    assert got["repositoryName"] == repo
    assert got["lifecyclePolicyText"] == expected_text
    return got


def preview_pages(ecr, repo, **kw):
    """Every page of the current preview; asserts the per-page invariants."""
    pages = []
    token = None
    while True:
        args = dict(repositoryName=repo, **kw)
        if token:
            args["nextToken"] = token
        page = ecr.get_lifecycle_policy_preview(**args)
        assert page["status"] == "COMPLETE"
        pages.append(page)
        token = page.get("nextToken")
        if not token:
            return pages
        assert len(pages) < 50, "paging does not end"


def results_by_digest(results):
    out = {}
    for r in results:
        assert r["imageDigest"] not in out, f"{r['imageDigest']} listed twice"
        out[r["imageDigest"]] = r
    return out


def pushed_at(ecr, repo):
    """digest -> imagePushedAt (datetime) from DescribeImages."""
    details = ecr.describe_images(repositoryName=repo)["imageDetails"]
    return {d["imageDigest"]: d["imagePushedAt"] for d in details}


def described(ecr, repo):
    """digest -> sorted tags of every image DescribeImages lists."""
    out = {}
    for page in ecr.get_paginator("describe_images").paginate(repositoryName=repo):
        for d in page["imageDetails"]:
            out[d["imageDigest"]] = sorted(d.get("imageTags", []))
    return out


def epoch_ms(dt):
    return round(dt.timestamp() * 1000)


def rfc3339_ms(dt):
    """How the CLI prints instants: RFC 3339, UTC, milliseconds."""
    ms = epoch_ms(dt)
    whole = datetime.datetime.fromtimestamp(ms // 1000, UTC)
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def parse_rfc3339(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def assert_preview_entries(results, expected, tags, pushed):
    """`results` are exactly `expected` (digest -> rule priority), each in
    the full GetLifecyclePolicyPreview shape."""
    got = results_by_digest(results)
    assert {d: r["appliedRulePriority"] for d, r in got.items()} == expected
    for d, r in got.items():
        want = {
            "imageDigest": d,
            "imagePushedAt": pushed[d],
            "action": {"type": "EXPIRE"},
            "appliedRulePriority": expected[d],
            "storageClass": "STANDARD",
        }
        if tags[d]:
            want["imageTags"] = tags[d]
        got_entry = dict(r)
        if "imageTags" in got_entry:
            got_entry["imageTags"] = sorted(got_entry["imageTags"])
        assert got_entry == want


def assert_cli_preview_entries(results, expected, tags, pushed):
    """The CLI's previewResults: the API's shape in JSON (epoch-second floats)."""
    got = results_by_digest(results)
    assert {d: r["appliedRulePriority"] for d, r in got.items()} == expected
    for d, r in got.items():
        assert r["action"] == {"type": "EXPIRE"}
        assert r["storageClass"] == "STANDARD"
        assert sorted(r.get("imageTags", [])) == tags[d]
        assert round(r["imagePushedAt"] * 1000) == epoch_ms(pushed[d])


def assert_expiry_records(records, expected, tags, pushed, actor="berth-cli"):
    """`records` (from `berth lifecycle run` or `events`) are exactly
    `expected`: digest -> (rule priority, reason)."""
    got = {}
    for r in records:
        assert r["imageDigest"] not in got, f"{r['imageDigest']} expired twice"
        got[r["imageDigest"]] = r
    assert {d: (r["appliedRulePriority"], r["reason"]) for d, r in got.items()} == expected
    for d, r in got.items():
        assert r["action"] == "EXPIRE"
        assert r["actor"] == actor, r
        assert sorted(r["imageTags"]) == tags[d]
        assert r["imagePushedAt"] == rfc3339_ms(pushed[d])


def blob_stored(berth, digest):
    return berth.blob_stored(digest)


# ---- 1. the whole flow ---------------------------------------------------------------


def test_preview_run_events_and_gc_agree(solo, name):
    berth = solo
    ecr = berth.client()
    v2 = V2(berth, ecr)
    repo = name()
    ecr.create_repository(repositoryName=repo)
    p = Pusher(ecr, v2, repo)
    base = os.urandom(4096)  # in every image
    m1 = os.urandom(1111)  # in i1 and i2 only: both expire
    m2 = os.urandom(2222)  # in i3 (expires) and i5 (stays)
    imgs = {
        "i1": p.image([base, m1, os.urandom(301)], ["v1"]),
        "i2": p.image([base, m1, os.urandom(302)]),
        "i3": p.image([base, m2, os.urandom(303)], ["v2"]),
        "i4": p.image([base, os.urandom(304)]),
        "i5": p.image([base, m2, os.urandom(305)], ["v3"]),
        "i6": p.image([base, os.urandom(306)], ["v4", "stable"]),
        "i7": p.image([base, os.urandom(307)], ["latest"]),
        "i8": p.image([base, os.urandom(308)]),
    }
    d = {k: i.digest for k, i in imgs.items()}
    tags = described(ecr, repo)
    assert tags == {
        d["i1"]: ["v1"], d["i2"]: [], d["i3"]: ["v2"], d["i4"]: [],
        d["i5"]: ["v3"], d["i6"]: ["stable", "v4"], d["i7"]: ["latest"], d["i8"]: [],
    }
    pushed = pushed_at(ecr, repo)
    order = [pushed[d[k]] for k in sorted(imgs, key=lambda k: int(k[1:]))]
    assert order == sorted(order) and len(set(order)) == len(order), "push times must be distinct and in order"

    # Rule 1: the two newest v* images stay (i6, i5); i3, i1 go. "latest" (i7)
    # is no v* image. Rule 2: the newest untagged image stays (i8); i4, i2 go.
    text = policy_text(
        rule(1, "tagged", "imageCountMoreThan", 2, tagPatternList=["v*"]),
        rule(2, "untagged", "imageCountMoreThan", 1),
    )
    assert strip(ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)) == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "lifecyclePolicyText": text,
    }
    # Never evaluated yet: no lastEvaluatedAt.
    assert strip(ecr.get_lifecycle_policy(repositoryName=repo)) == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "lifecyclePolicyText": text,
    }
    expected = {d["i1"]: 1, d["i3"]: 1, d["i2"]: 2, d["i4"]: 2}

    # The preview (of the stored policy).
    prev = run_preview(ecr, repo, stored=text)
    assert "nextToken" not in prev
    assert prev["summary"] == {"expiringImageTotalCount": 4}
    assert_preview_entries(prev["previewResults"], expected, tags, pushed)
    # The CLI's preview at "now" says the same.
    cli_prev = berth.cli("lifecycle", "preview", "--repository-name", repo)
    assert cli_prev["registryId"] == ACCOUNT
    assert cli_prev["repositoryName"] == repo
    assert cli_prev["lifecyclePolicyText"] == text
    assert cli_prev["summary"] == {"expiringImageTotalCount": 4}
    assert_cli_preview_entries(cli_prev["previewResults"], expected, tags, pushed)
    # Previews change nothing.
    assert described(ecr, repo) == tags

    # Execution.
    run = berth.cli("lifecycle", "run", "--repository-name", repo)
    assert len(run["evaluations"]) == 1
    ev = run["evaluations"][0]
    assert (ev["registryId"], ev["repositoryName"]) == (ACCOUNT, repo)
    assert_expiry_records(ev["expired"], {k: (v, "rule") for k, v in expected.items()}, tags, pushed)
    # Preview and execution agree.
    assert {r["imageDigest"] for r in ev["expired"]} == set(expected)
    for r in ev["expired"]:
        assert r["occurredAt"] == ev["evaluatedAt"]

    got = ecr.get_lifecycle_policy(repositoryName=repo)
    assert got["lifecyclePolicyText"] == text
    assert epoch_ms(got["lastEvaluatedAt"]) == epoch_ms(parse_rfc3339(ev["evaluatedAt"]))
    assert abs((datetime.datetime.now(UTC) - got["lastEvaluatedAt"]).total_seconds()) < 60

    survivors = {k: imgs[k] for k in ("i5", "i6", "i7", "i8")}
    expired = {k: imgs[k] for k in ("i1", "i2", "i3", "i4")}
    assert described(ecr, repo) == {i.digest: tags[i.digest] for i in survivors.values()}
    batch = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": i.digest} for i in expired.values()])
    assert batch["images"] == []
    assert sorted(f["imageId"]["imageDigest"] for f in batch["failures"]) == sorted(i.digest for i in expired.values())
    assert {f["failureCode"] for f in batch["failures"]} == {"ImageNotFound"}
    for i in expired.values():
        v2.assert_manifest_unknown(repo, i.digest)
    for t in ("v1", "v2"):
        v2.assert_manifest_unknown(repo, t)
    for k, i in survivors.items():
        v2.assert_pullable(repo, i)
        for t in tags[i.digest]:
            v2.assert_pullable(repo, i, t)

    # The audit trail.
    events = berth.cli("lifecycle", "events", "--repository-name", repo)["events"]
    assert sorted(events, key=lambda e: e["imageDigest"]) == sorted(ev["expired"], key=lambda e: e["imageDigest"])

    # A second evaluation finds nothing more to do.
    again = berth.cli("lifecycle", "run", "--repository-name", repo)["evaluations"]
    assert [(e["repositoryName"], e["expired"]) for e in again] == [(repo, [])]
    assert len(berth.cli("lifecycle", "events", "--repository-name", repo)["events"]) == 4

    # Garbage collection frees exactly the blobs only the expired images used.
    survivor_blobs = {b: data for i in survivors.values() for b, data in i.blobs.items()}
    expired_blobs = {b: data for i in expired.values() for b, data in i.blobs.items()}
    doomed = {b: data for b, data in expired_blobs.items() if b not in survivor_blobs}
    assert sha256(m1) in doomed and sha256(m2) not in doomed and sha256(base) not in doomed
    assert len(doomed) == 4 * 2 + 1  # 4 configs, 4 own layers, m1
    all_blobs = set(p.uploaded)
    for b in all_blobs:
        assert blob_stored(berth, b), b
    time.sleep(1.5)
    gc = berth.cli("gc", "run", settings=["--gc-grace", "1s"])
    assert {k: v for k, v in gc.items() if k != "duration_ms"} == {
        "blobs_scanned": len(all_blobs),
        "blobs_deleted": len(doomed),
        "bytes_reclaimed": sum(len(b) for b in doomed.values()),
        "referrers_deleted": 0,
        "orphan_files_deleted": 0,
        "orphan_uploads_deleted": 0,
        "layer_inventories_deleted": 0,
    }
    assert isinstance(gc["duration_ms"], int)
    for b in doomed:
        assert not blob_stored(berth, b), b
        r = v2.get_blob(repo, b)
        assert r.status_code == 404, (b, r.status_code)
        assert r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    for b in survivor_blobs:
        assert blob_stored(berth, b), b
    for i in survivors.values():
        v2.assert_pullable(repo, i)
    # Nothing more to collect.
    gc = berth.cli("gc", "run", settings=["--gc-grace", "1s"])
    assert (gc["blobs_scanned"], gc["blobs_deleted"], gc["bytes_reclaimed"]) == (len(survivor_blobs), 0, 0)


# ---- 2. sinceImagePushed, in the future -----------------------------------------------


def test_since_image_pushed_fires_in_the_future(solo, name, tmp_path):
    berth = solo
    ecr = berth.client()
    v2 = V2(berth, ecr)
    repo = name()
    ecr.create_repository(repositoryName=repo)
    p = Pusher(ecr, v2, repo)
    u1 = p.image([os.urandom(100)])
    t1 = p.image([os.urandom(101)], ["keep"])
    u2 = p.image([os.urandom(102)])
    tags = described(ecr, repo)
    pushed = pushed_at(ecr, repo)
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    text = policy_text(rule(1, "untagged", "sinceImagePushed", 1, unit="days"))
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)

    # Now: nothing is a day old.
    prev = run_preview(ecr, repo, stored=text)
    assert prev["previewResults"] == []
    assert prev["summary"] == {"expiringImageTotalCount": 0}

    def cli_preview(at, *extra):
        return berth.cli(
            "lifecycle", "preview", "--repository-name", repo,
            "--at", at.strftime("%Y-%m-%dT%H:%M:%SZ"), *extra,
        )

    later = cli_preview(now + datetime.timedelta(hours=23))
    assert later["previewResults"] == []
    assert later["summary"] == {"expiringImageTotalCount": 0}
    at = now + datetime.timedelta(days=2)
    future = cli_preview(at)
    assert future["evaluatedAt"] == at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert future["lifecyclePolicyText"] == text
    assert future["summary"] == {"expiringImageTotalCount": 2}
    assert_cli_preview_entries(future["previewResults"], {u1.digest: 1, u2.digest: 1}, tags, pushed)
    # Another policy from a file, same instant: every image is over a day old.
    other = policy_text(rule(3, "any", "sinceImagePushed", 1, unit="days"))
    f = tmp_path / "policy.json"
    f.write_text(other)
    alt = cli_preview(at, "--policy-file", str(f))
    assert alt["lifecyclePolicyText"] == other
    assert alt["summary"] == {"expiringImageTotalCount": 3}
    assert_cli_preview_entries(alt["previewResults"], {u1.digest: 3, t1.digest: 3, u2.digest: 3}, tags, pushed)
    # The stored policy is unchanged by that.
    assert ecr.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"] == text

    # Run now: nothing. Run three days from now: the untagged images go.
    run = berth.cli("lifecycle", "run", "--repository-name", repo)["evaluations"]
    assert [(e["repositoryName"], e["expired"]) for e in run] == [(repo, [])]
    assert len(described(ecr, repo)) == 3
    run = berth.cli("lifecycle", "run", "--repository-name", repo, faketime="+3d")["evaluations"]
    assert len(run) == 1
    evaluated = parse_rfc3339(run[0]["evaluatedAt"])
    assert abs((evaluated - (datetime.datetime.now(UTC) + datetime.timedelta(days=3))).total_seconds()) < 120
    expected = {u1.digest: (1, "rule"), u2.digest: (1, "rule")}
    assert_expiry_records(run[0]["expired"], expected, tags, pushed)
    assert described(ecr, repo) == {t1.digest: ["keep"]}
    v2.assert_manifest_unknown(repo, u1.digest)
    v2.assert_manifest_unknown(repo, u2.digest)
    v2.assert_pullable(repo, t1, "keep")
    got = ecr.get_lifecycle_policy(repositoryName=repo)
    assert epoch_ms(got["lastEvaluatedAt"]) == epoch_ms(evaluated)
    events = berth.cli("lifecycle", "events", "--repository-name", repo)["events"]
    assert_expiry_records(events, expected, tags, pushed)
    assert {e["occurredAt"] for e in events} == {run[0]["evaluatedAt"]}


# ---- 3. invalid policies ----------------------------------------------------------------

VALID = policy_text(rule(1, "untagged", "imageCountMoreThan", 5))

INVALID = [
    (
        "tagged-prefix-and-pattern",
        policy_text(rule(3, "tagged", "imageCountMoreThan", 1, tagPrefixList=["v"], tagPatternList=["v*"])),
        "rule with rulePriority 3",
    ),
    (
        "untagged-with-prefix-list",
        policy_text(rule(2, "untagged", "imageCountMoreThan", 1, tagPrefixList=["v"])),
        "rule with rulePriority 2",
    ),
    ("count-number-zero", policy_text(rule(4, "untagged", "imageCountMoreThan", 0)), "rule with rulePriority 4"),
    (
        "count-unit-on-image-count",
        policy_text(rule(5, "untagged", "imageCountMoreThan", 3, unit="days")),
        "rule with rulePriority 5",
    ),
    (
        "any-before-tagged",
        policy_text(
            rule(1, "any", "imageCountMoreThan", 5),
            rule(2, "tagged", "imageCountMoreThan", 1, tagPrefixList=["v"]),
        ),
        "rule with rulePriority 1",
    ),
    (
        "duplicate-priority",
        policy_text(
            rule(7, "tagged", "imageCountMoreThan", 1, tagPrefixList=["a"]),
            rule(7, "untagged", "imageCountMoreThan", 1),
        ),
        "rulePriority 7",
    ),
    (
        "pattern-with-five-stars",
        policy_text(rule(6, "tagged", "imageCountMoreThan", 1, tagPatternList=["a*b*c*d*e*f"])),
        "rule with rulePriority 6",
    ),
    (
        "since-pulled-with-expire",
        policy_text(rule(8, "any", "sinceImagePulled", 30, unit="days")),
        "rule with rulePriority 8",
    ),
    (
        "transition-without-target",
        policy_text(rule(9, "untagged", "sinceImagePushed", 30, unit="days", action={"type": "transition"})),
        "rule with rulePriority 9",
    ),
    # Valid for ECR, but the archive storage class is not supported yet.
    (
        "transition-to-archive",
        policy_text(
            rule(2, "any", "sinceImagePulled", 90, unit="days",
                 action={"type": "transition", "targetStorageClass": "archive"})
        ),
        "rule with rulePriority 2",
    ),
    (
        "archive-expire",
        policy_text(rule(3, "any", "sinceImageTransitioned", 90, unit="days", storageClass="archive")),
        "rule with rulePriority 3",
    ),
    # More of §4.1.
    ("tagged-without-filter", policy_text(rule(2, "tagged", "imageCountMoreThan", 1)), "rule with rulePriority 2"),
    (
        "since-pushed-without-unit",
        policy_text(rule(4, "untagged", "sinceImagePushed", 3)),
        "rule with rulePriority 4",
    ),
    (
        "count-number-fraction",
        policy_text(rule(4, "untagged", "imageCountMoreThan", 1.5)),
        "rule with rulePriority 4",
    ),
    (
        "two-untagged-rules",
        policy_text(rule(1, "untagged", "imageCountMoreThan", 1), rule(2, "untagged", "sinceImagePushed", 3, unit="days")),
        "rule with rulePriority 2",
    ),
    (
        "repeated-prefix-list",
        policy_text(
            rule(1, "tagged", "imageCountMoreThan", 1, tagPrefixList=["a", "b"]),
            rule(2, "tagged", "imageCountMoreThan", 3, tagPrefixList=["b", "a"]),
        ),
        "rule with rulePriority 2",
    ),
    (
        "expire-with-target",
        policy_text(
            rule(2, "untagged", "imageCountMoreThan", 1, action={"type": "expire", "targetStorageClass": "archive"})
        ),
        "rule with rulePriority 2",
    ),
    ("malformed-json", '{"rules": [{"rulePriority": 1, "selection": ' + " " * 100, None),
    (
        "unknown-top-level-key",
        json.dumps({"rules": json.loads(VALID)["rules"], "Version": "2012-10-17"}, indent=2),
        '"Version"',
    ),
    (
        "unknown-selection-key",
        policy_text(rule(1, "untagged", "imageCountMoreThan", 1, tagFilter="x")),
        '"tagFilter"',
    ),
    (
        "unknown-rule-key",
        json.dumps({"rules": [dict(json.loads(VALID)["rules"][0], enabled=True)]}, indent=2),
        '"enabled"',
    ),
    ("empty-rules", '{"rules": [' + " " * 100 + "]}", None),
    ("rules-not-array", '{"rules": "expire everything"' + " " * 100 + "}", None),
    ("not-an-object", "[" + " " * 100 + "]", None),
]


@pytest.mark.parametrize("text,named", [v[1:] for v in INVALID], ids=[v[0] for v in INVALID])
def test_invalid_policy_rejected_and_nothing_stored(ecr, name, text, named):
    assert len(text) >= 100
    repo = name()
    ecr.create_repository(repositoryName=repo)
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=VALID)
    calls = {
        "PutLifecyclePolicy": lambda: ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text),
        "StartLifecyclePolicyPreview": lambda: ecr.start_lifecycle_policy_preview(
            repositoryName=repo, lifecyclePolicyText=text
        ),
    }
    for op, call in calls.items():
        with pytest.raises(ClientError) as e:
            call()
        code, message = error(e)
        assert code == "InvalidParameterException", (op, message)
        assert message.startswith(PREFIX), (op, message)
        if named is not None:
            assert named in message, (op, message)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Nothing stored: the previous policy is in place, no preview was started.
    assert ecr.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"] == VALID
    with pytest.raises(ClientError) as e:
        ecr.get_lifecycle_policy_preview(repositoryName=repo)
    assert error(e)[0] == "LifecyclePolicyPreviewNotFoundException"


def test_policy_edge_cases_accepted(ecr, name):
    """The valid side of the boundaries the invalid vectors probe."""
    repo = name()
    ecr.create_repository(repositoryName=repo)
    for text in [
        # Four `*` are allowed; `any` last; distinct prefix sets.
        policy_text(
            rule(1, "tagged", "imageCountMoreThan", 1, tagPatternList=["*test*1*2*3"]),
            rule(2, "tagged", "imageCountMoreThan", 1, tagPrefixList=["a", "b"]),
            rule(3, "tagged", "imageCountMoreThan", 1, tagPrefixList=["a"]),
            rule(4, "untagged", "sinceImagePushed", 14, unit="days"),
            rule(10, "any", "imageCountMoreThan", 100),
        ),
        # Gaps in priorities; rules in any order in the document.
        policy_text(rule(20, "any", "sinceImagePushed", 1, unit="days"), rule(5, "untagged", "imageCountMoreThan", 1)),
    ]:
        r = ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
        assert r["lifecyclePolicyText"] == text
        assert ecr.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"] == text
        run_preview(ecr, repo, text)


def test_policy_text_shorter_than_model_minimum(ecr_raw, name):
    repo = name()
    ecr_raw.create_repository(repositoryName=repo)
    # No valid policy is that short; the length check answers first.
    short = '{"rules":[]}'
    for call in (ecr_raw.put_lifecycle_policy, ecr_raw.start_lifecycle_policy_preview):
        with pytest.raises(ClientError) as e:
            call(repositoryName=repo, lifecyclePolicyText=short)
        assert error(e) == (
            "InvalidParameterException",
            constraint_msg("lifecyclePolicyText", "must have length greater than or equal to 100"),
        )
    with pytest.raises(ClientError) as e:
        ecr_raw.get_lifecycle_policy(repositoryName=repo)
    assert error(e)[0] == "LifecyclePolicyNotFoundException"


# ---- 4. error paths -----------------------------------------------------------------------


def test_lifecycle_error_paths(ecr, name):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    no_policy = (
        "LifecyclePolicyNotFoundException",
        f"Lifecycle policy does not exist for the repository with name '{repo}' in the registry with id '{ACCOUNT}'",
    )
    for call in (
        lambda: ecr.get_lifecycle_policy(repositoryName=repo),
        lambda: ecr.delete_lifecycle_policy(repositoryName=repo),
        # No text and no stored policy.
        lambda: ecr.start_lifecycle_policy_preview(repositoryName=repo),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error(e) == no_policy
    with pytest.raises(ClientError) as e:
        ecr.get_lifecycle_policy_preview(repositoryName=repo)
    code, message = error(e)
    assert code == "LifecyclePolicyPreviewNotFoundException"
    assert f"'{repo}'" in message and f"'{ACCOUNT}'" in message

    # A missing repository, for every operation.
    missing = name("missing")
    for call in (
        lambda: ecr.put_lifecycle_policy(repositoryName=missing, lifecyclePolicyText=VALID),
        lambda: ecr.get_lifecycle_policy(repositoryName=missing),
        lambda: ecr.delete_lifecycle_policy(repositoryName=missing),
        lambda: ecr.start_lifecycle_policy_preview(repositoryName=missing),
        lambda: ecr.start_lifecycle_policy_preview(repositoryName=missing, lifecyclePolicyText=VALID),
        lambda: ecr.get_lifecycle_policy_preview(repositoryName=missing),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error(e) == ("RepositoryNotFoundException", not_found_msg(missing))

    # Put, replace, delete (which returns the deleted text).
    other = policy_text(rule(1, "untagged", "imageCountMoreThan", 9))
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=VALID)
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=other)
    assert ecr.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"] == other
    deleted = strip(ecr.delete_lifecycle_policy(repositoryName=repo))
    deleted.pop("lastEvaluatedAt", None)
    assert deleted == {"registryId": ACCOUNT, "repositoryName": repo, "lifecyclePolicyText": other}
    for call in (
        lambda: ecr.get_lifecycle_policy(repositoryName=repo),
        lambda: ecr.delete_lifecycle_policy(repositoryName=repo),
        lambda: ecr.start_lifecycle_policy_preview(repositoryName=repo),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error(e) == no_policy

    # A preview of the stored policy, then DeleteRepository(force) takes the
    # policy and the preview with it.
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=VALID)
    done = run_preview(ecr, repo, stored=VALID)
    assert done["previewResults"] == [] and done["summary"] == {"expiringImageTotalCount": 0}
    ecr.delete_repository(repositoryName=repo, force=True)
    with pytest.raises(ClientError) as e:
        ecr.get_lifecycle_policy(repositoryName=repo)
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(repo))
    ecr.create_repository(repositoryName=repo)
    with pytest.raises(ClientError) as e:
        ecr.get_lifecycle_policy(repositoryName=repo)
    assert error(e) == no_policy
    with pytest.raises(ClientError) as e:
        ecr.get_lifecycle_policy_preview(repositoryName=repo)
    assert error(e)[0] == "LifecyclePolicyPreviewNotFoundException"


def test_preview_with_text_does_not_store_it(ecr, name):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=VALID)
    other = policy_text(rule(1, "untagged", "imageCountMoreThan", 9))
    run_preview(ecr, repo, other)
    assert ecr.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"] == VALID
    # Without text, the stored policy is previewed.
    run_preview(ecr, repo, stored=VALID)


# ---- 5. preview paging ----------------------------------------------------------------------


def test_preview_paging_and_filters(berth, ecr, name):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    p = Pusher(ecr, V2(berth, ecr), repo)
    base = os.urandom(64)
    imgs = []  # oldest first
    for i in range(25):
        tagged = i % 5 in (1, 3)
        imgs.append((p.image([base], [f"t{i}"] if tagged else []), tagged))
    tagged = [img.digest for img, t in imgs if t]
    untagged = [img.digest for img, t in imgs if not t]
    assert (len(tagged), len(untagged)) == (10, 15)
    # Rule 1 keeps the 3 newest tagged images, rule 2 the 2 newest untagged.
    expected = {**{d: 1 for d in tagged[:7]}, **{d: 2 for d in untagged[:13]}}
    text = policy_text(
        rule(1, "tagged", "imageCountMoreThan", 3, tagPrefixList=["t"]),
        rule(2, "untagged", "imageCountMoreThan", 2),
    )
    first = run_preview(ecr, repo, text)
    assert len(first["previewResults"]) == 20 and "nextToken" not in first

    pages = preview_pages(ecr, repo, maxResults=7)
    assert [len(pg["previewResults"]) for pg in pages] == [7, 7, 6]
    assert ["nextToken" in pg for pg in pages] == [True, True, False]
    for pg in pages:
        assert pg["summary"] == {"expiringImageTotalCount": 20}
        assert pg["lifecyclePolicyText"] == text
    results = [r for pg in pages for r in pg["previewResults"]]
    got = results_by_digest(results)  # asserts no duplicates
    assert {d: r["appliedRulePriority"] for d, r in got.items()} == expected
    # The same as the unpaged listing, in the same order.
    assert [r["imageDigest"] for r in results] == [r["imageDigest"] for r in first["previewResults"]]

    for status, want, size, sizes in (
        ("TAGGED", tagged[:7], 3, [3, 3, 1]),
        ("UNTAGGED", untagged[:13], 5, [5, 5, 3]),
        ("ANY", list(expected), 100, [20]),
    ):
        pages = preview_pages(ecr, repo, maxResults=size, filter={"tagStatus": status})
        assert [len(pg["previewResults"]) for pg in pages] == sizes, status
        rs = [r for pg in pages for r in pg["previewResults"]]
        assert sorted(results_by_digest(rs)) == sorted(want), status
        for r in rs:
            assert ("imageTags" in r) == (r["imageDigest"] in tagged)
        for pg in pages:
            assert pg["summary"] == {"expiringImageTotalCount": 20}

    # imageIds picks entries out of the preview.
    t1 = imgs[1][0]
    pick = ecr.get_lifecycle_policy_preview(
        repositoryName=repo, imageIds=[{"imageTag": "t1"}, {"imageDigest": untagged[0]}]
    )["previewResults"]
    assert sorted(r["imageDigest"] for r in pick) == sorted([t1.digest, untagged[0]])
    # A kept image is not in the preview.
    kept = ecr.get_lifecycle_policy_preview(repositoryName=repo, imageIds=[{"imageTag": "t23"}])
    assert kept["previewResults"] == []

    with pytest.raises(ClientError) as e:
        ecr.get_lifecycle_policy_preview(repositoryName=repo, nextToken="bogus-token")
    assert error(e)[0] == "InvalidParameterException"


# ---- 6. manifest lists and referrers ------------------------------------------------------------


def test_index_children_protected_and_referrers_follow(solo, name):
    berth = solo
    ecr = berth.client()
    v2 = V2(berth, ecr)
    repo = name()
    ecr.create_repository(repositoryName=repo)
    p = Pusher(ecr, v2, repo)
    base = os.urandom(1000)
    c1 = p.image([base, os.urandom(201)])  # untagged children of a tagged index
    c2 = p.image([base, os.urandom(202)])
    idx = p.index([c1, c2], tag="multi")
    u1 = p.image([base, os.urandom(211)])
    u2 = p.image([base, os.urandom(212)])
    u3 = p.image([base, os.urandom(213)])
    sbom = p.referrer(u1, SBOM_TYPE, b'{"packages": ["' + os.urandom(8).hex().encode() + b'"]}')
    sig = p.referrer(u3, SIG_TYPE, os.urandom(64))
    tags = described(ecr, repo)
    assert tags == {
        c1.digest: [], c2.digest: [], idx.digest: ["multi"], u1.digest: [], u2.digest: [],
        u3.digest: [], sbom.digest: [], sig.digest: [],
    }
    pushed = pushed_at(ecr, repo)
    assert [m["digest"] for m in v2.referrers(repo, u1.digest)] == [sbom.digest]

    # Untagged, newest first: u3 (kept), u2, u1, c2, c1. The children are
    # counted but protected by the index; the referrers go with their subjects.
    text = policy_text(rule(1, "untagged", "imageCountMoreThan", 1))
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    expected = {u2.digest: 1, u1.digest: 1}
    prev = run_preview(ecr, repo, stored=text)
    assert prev["summary"] == {"expiringImageTotalCount": 2}
    assert_preview_entries(prev["previewResults"], expected, tags, pushed)
    cli_prev = berth.cli("lifecycle", "preview", "--repository-name", repo)
    assert_cli_preview_entries(cli_prev["previewResults"], expected, tags, pushed)

    run = berth.cli("lifecycle", "run", "--repository-name", repo)["evaluations"]
    assert len(run) == 1
    records = {
        u2.digest: (1, "rule"),
        u1.digest: (1, "rule"),
        sbom.digest: (1, f"referrer of {u1.digest}"),
    }
    assert_expiry_records(run[0]["expired"], records, tags, pushed)
    events = berth.cli("lifecycle", "events", "--repository-name", repo)["events"]
    assert_expiry_records(events, records, tags, pushed)

    survivors = [c1, c2, idx, u3, sig]
    assert described(ecr, repo) == {i.digest: tags[i.digest] for i in survivors}
    for gone in (u1, u2, sbom):
        v2.assert_manifest_unknown(repo, gone.digest)
    v2.assert_pullable(repo, idx, "multi")
    for i in survivors:
        v2.assert_pullable(repo, i)
    assert [(m["digest"], m.get("artifactType")) for m in v2.referrers(repo, u3.digest)] == [(sig.digest, SIG_TYPE)]

    # Evaluated again: the children stay protected, u3 stays the newest.
    again = berth.cli("lifecycle", "run", "--repository-name", repo)["evaluations"]
    assert [e["expired"] for e in again] == [[]]

    # GC frees the blobs of u1, u2 and the SBOM; the empty config stays (sig uses it).
    doomed = {**u1.blobs, **u2.blobs, **sbom.blobs}
    keep = {b: d for i in survivors for b, d in i.blobs.items()}
    doomed = {b: d for b, d in doomed.items() if b not in keep}
    assert sha256(b"{}") not in doomed and len(doomed) == 5
    time.sleep(1.5)
    gc = berth.cli("gc", "run", settings=["--gc-grace", "1s"])
    assert (gc["blobs_deleted"], gc["bytes_reclaimed"], gc["referrers_deleted"]) == (
        len(doomed),
        sum(len(d) for d in doomed.values()),
        0,
    )
    for b in doomed:
        assert not blob_stored(berth, b), b
    for i in survivors:
        v2.assert_pullable(repo, i)


def test_expired_index_takes_its_exclusive_untagged_children(solo, name):
    berth = solo
    ecr = berth.client()
    v2 = V2(berth, ecr)
    repo = name()
    ecr.create_repository(repositoryName=repo)
    p = Pusher(ecr, v2, repo)
    d1 = p.image([os.urandom(301)])
    d2 = p.image([os.urandom(302)])
    d3 = p.image([os.urandom(303)])
    y1 = p.index([d1, d2], tag="old-1")
    y2 = p.index([d2, d3], tag="old-2")
    tags = described(ecr, repo)
    pushed = pushed_at(ecr, repo)
    text = policy_text(rule(1, "tagged", "imageCountMoreThan", 1, tagPatternList=["old-*"]))
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    prev = run_preview(ecr, repo, stored=text)
    assert_preview_entries(prev["previewResults"], {y1.digest: 1}, tags, pushed)
    run = berth.cli("lifecycle", "run", "--repository-name", repo)["evaluations"]
    # d1 was only in y1; d2 is still in y2.
    records = {y1.digest: (1, "rule"), d1.digest: (1, f"child of {y1.digest}")}
    assert_expiry_records(run[0]["expired"], records, tags, pushed)
    assert described(ecr, repo) == {y2.digest: ["old-2"], d2.digest: [], d3.digest: []}
    v2.assert_manifest_unknown(repo, "old-1")
    v2.assert_manifest_unknown(repo, d1.digest)
    v2.assert_pullable(repo, y2, "old-2")
    v2.assert_pullable(repo, d2)
    v2.assert_pullable(repo, d3)


# ---- the server's own schedule ----------------------------------------------------------------


def test_server_evaluates_and_collects_on_its_own(tmp_path, name):
    """`--lifecycle-interval` and `--gc-interval`/`--gc-grace`: the server expires
    and collects without any command."""
    berth = Berth(tmp_path, extra_args=["--lifecycle-interval", "1s", "--gc-interval", "1s", "--gc-grace", "1s"])
    try:
        ecr = berth.client()
        v2 = V2(berth, ecr)
        repo = name()
        ecr.create_repository(repositoryName=repo)
        p = Pusher(ecr, v2, repo)
        base = os.urandom(500)
        old = p.image([base, os.urandom(401)])
        mid = p.image([base, os.urandom(402)])
        new = p.image([base, os.urandom(403)])
        tags = described(ecr, repo)
        pushed = pushed_at(ecr, repo)
        text = policy_text(rule(1, "untagged", "imageCountMoreThan", 1))
        ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
        deadline = time.monotonic() + 15
        while len(described(ecr, repo)) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert described(ecr, repo) == {new.digest: []}
        assert "lastEvaluatedAt" in ecr.get_lifecycle_policy(repositoryName=repo)
        events = berth.cli("lifecycle", "events", "--repository-name", repo)["events"]
        assert_expiry_records(
            events, {old.digest: (1, "rule"), mid.digest: (1, "rule")}, tags, pushed, actor="berth-lifecycle"
        )
        doomed = [b for i in (old, mid) for b in i.blobs if b not in new.blobs]
        assert len(doomed) == 4
        while any(blob_stored(berth, b) for b in doomed) and time.monotonic() < deadline:
            time.sleep(0.2)
        for b in doomed:
            assert not blob_stored(berth, b), b
        v2.assert_pullable(repo, new)
    finally:
        berth.stop()


# ---- the commands themselves ---------------------------------------------------------------------


def test_cli_settings_after_the_subcommand(berth, ecr, name):
    """The documented forms: `berth gc run --data-dir D [--gc-grace 1s]`,
    `berth lifecycle events --data-dir D --repository-name R`."""
    repo = name()
    ecr.create_repository(repositoryName=repo)
    for argv in (
        [berth.bin, "gc", "run", *berth.store_args, "--gc-grace", "1h"],
        [berth.bin, "lifecycle", "events", *berth.store_args, "--repository-name", repo],
    ):
        out = subprocess.run(argv, env=berth.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (argv[1:3], out.stderr)
        json.loads(out.stdout)


def test_cli_errors(berth, ecr, name, tmp_path):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    # No policy to run or preview; no such repository.
    for args in (
        ("lifecycle", "run", "--repository-name", repo),
        ("lifecycle", "preview", "--repository-name", repo),
        ("lifecycle", "preview", "--repository-name", name("missing")),
    ):
        out = berth.cli_run(*args)
        assert out.returncode != 0, args
        assert out.stdout == "", args
        assert out.stderr.strip(), args
    assert berth.cli("lifecycle", "events", "--repository-name", repo) == {"events": []}
    # A bad --at, and a bad --policy-file, with a policy in place.
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=VALID)
    bad = tmp_path / "bad.json"
    bad.write_text(INVALID[0][1])
    for extra in (("--at", "next tuesday"), ("--policy-file", str(bad)), ("--policy-file", str(tmp_path / "none"))):
        out = berth.cli_run("lifecycle", "preview", "--repository-name", repo, *extra)
        assert out.returncode != 0, extra
        assert out.stdout == "", extra
    out = berth.cli_run("lifecycle", "preview", "--repository-name", repo, "--policy-file", str(bad))
    assert PREFIX + "rule with rulePriority 3" in out.stderr, out.stderr
    assert berth.cli("lifecycle", "preview", "--repository-name", repo)["previewResults"] == []

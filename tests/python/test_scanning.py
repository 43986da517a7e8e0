"""Image scanning through ECR's API with boto3 and the aws CLI: scan on push,
manual scans and their quota, registry rules and their precedence,
DescribeImageScanFindings (statuses, findings, counts, paging, enhanced
findings), DescribeImages' scan fields, continuous re-matching after a second
import, unsupported images, indexes, hostile layers and bad OSV data.

Images are built here: tar layers holding a dpkg status database (stanzas in
Debian's format, with the traps a matcher must get right: an epoch only on
the binary, a binNMU suffix, a tilde), an os-release, a Python dist-info, and
whiteouts; the OSV records are written against those packages.
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import uuid

import pytest

from conftest import ACCOUNT, Berth

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'

# Stanzas as dpkg writes them. bsdutils carries an epoch its source lacks;
# libsystemd0's version has a tilde; bash's a binNMU suffix.
STATUS = b"""Package: bsdutils
Essential: yes
Status: install ok installed
Priority: required
Section: utils
Installed-Size: 356
Maintainer: util-linux packagers <util-linux@packages.debian.org>
Architecture: amd64
Multi-Arch: foreign
Source: util-linux (2.38.1-5+deb12u3)
Version: 1:2.38.1-5+deb12u3
Description: basic utilities from 4.4BSD-Lite
 This package contains the bare minimum of BSD utilities.

Package: mount
Status: install ok installed
Priority: required
Architecture: amd64
Source: util-linux
Version: 2.38.1-5+deb12u3
Description: tools for mounting and manipulating filesystems

Package: bash
Essential: yes
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b13
Description: GNU Bourne Again SHell

Package: libsystemd0
Status: install ok installed
Architecture: amd64
Source: systemd
Version: 252.39-1~deb12u2
Description: systemd utility library

Package: logsave
Status: install ok installed
Architecture: amd64
Source: e2fsprogs
Version: 1.47.0-2+b2
Description: save the output of a command in a log file

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Description: removed, only its configuration is left
"""

DIST_INFO_METADATA = b"Metadata-Version: 2.1\nName: Requests\nVersion: 2.25.0\nSummary: HTTP for Humans.\n"

MODIFIED_1 = "2026-11-01T10:00:00Z"
MODIFIED_2 = "2026-11-20T08:30:00Z"


def sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def tar_of(files=None, dirs=(), symlinks=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            t.addfile(ti)
        for path, data in (files or {}).items():
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
        for path, target in (symlinks or {}).items():
            ti = tarfile.TarInfo(path)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            t.addfile(ti)
    return buf.getvalue()


def upload_blob(ecr, repo, data: bytes):
    have = ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[sha256(data)])
    if have["layers"] and have["layers"][0].get("layerAvailability") == "AVAILABLE":
        return sha256(data)
    up = ecr.initiate_layer_upload(repositoryName=repo)
    ecr.upload_layer_part(
        repositoryName=repo,
        uploadId=up["uploadId"],
        partFirstByte=0,
        partLastByte=len(data) - 1,
        layerPartBlob=data,
    )
    ecr.complete_layer_upload(repositoryName=repo, uploadId=up["uploadId"], layerDigests=[sha256(data)])
    return sha256(data)


def push_image(ecr, repo, layers, tag=None, config_media_type=OCI_CONFIG, platform=None):
    """`layers`: (media type, uncompressed tar, blob bytes). Returns the manifest digest."""
    config = {
        "architecture": (platform or {}).get("architecture", "amd64"),
        "os": "linux",
        "config": {"Labels": {"nonce": uuid.uuid4().hex}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(raw) for _, raw, _ in layers]},
    }
    config_bytes = json.dumps(config).encode()
    upload_blob(ecr, repo, config_bytes)
    descs = []
    for media_type, _, blob in layers:
        upload_blob(ecr, repo, blob)
        descs.append({"mediaType": media_type, "size": len(blob), "digest": sha256(blob)})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_media_type, "size": len(config_bytes), "digest": sha256(config_bytes)},
            "layers": descs,
        }
    )
    args = dict(repositoryName=repo, imageManifest=manifest, imageManifestMediaType=OCI_MANIFEST)
    if tag:
        args["imageTag"] = tag
    return ecr.put_image(**args)["image"]["imageId"]["imageDigest"]


def gz_layer(raw: bytes):
    return (LAYER_GZIP, raw, gzip.compress(raw, mtime=0))


def debian_image_layers(extra_files=None):
    """Base layer: os-release and the status file; a second layer adds
    `extra_files` and removes nothing; a third whites out logsave's stanza
    by rewriting the status file without it (as dpkg --purge does)."""
    base = tar_of(
        {"usr/lib/os-release": OS_RELEASE, "var/lib/dpkg/status": STATUS},
        dirs=("etc/", "usr/", "usr/lib/", "var/", "var/lib/", "var/lib/dpkg/"),
        symlinks={"etc/os-release": "../usr/lib/os-release"},
    )
    layers = [gz_layer(base)]
    if extra_files:
        layers.append(gz_layer(tar_of(extra_files)))
    without_logsave = STATUS.replace(
        b"""Package: logsave
Status: install ok installed
Architecture: amd64
Source: e2fsprogs
Version: 1.47.0-2+b2
Description: save the output of a command in a log file

""",
        b"",
    )
    assert without_logsave != STATUS
    top = tar_of({"var/lib/dpkg/status": without_logsave, "usr/share/doc/logsave/.wh.copyright": b""})
    layers.append((LAYER_TAR, top, top))
    return layers


def osv(id_, eco, name, events=None, versions=None, modified=MODIFIED_1, **extra):
    affected = {"package": {"ecosystem": eco, "name": name}}
    if events is not None:
        affected["ranges"] = [{"type": "SEMVER" if eco in ("npm", "crates.io") else "ECOSYSTEM", "events": events}]
    if versions is not None:
        affected["versions"] = versions
    for k in ("ecosystem_specific", "database_specific", "severity_affected"):
        if k in extra:
            affected[k if k != "severity_affected" else "severity"] = extra.pop(k)
    rec = {"schema_version": "1.6.0", "id": id_, "modified": modified, "affected": [affected]}
    rec.update(extra)
    return rec


RECORDS = [
    # util-linux fixed one revision after the installed source version:
    # bsdutils (epoch only on the binary) and mount are affected.
    osv(
        "DSA-9001-1",
        "Debian:12",
        "util-linux",
        [{"introduced": "0"}, {"fixed": "2.38.1-5+deb12u4"}],
        aliases=["CVE-2026-0001"],
        summary="util-linux: wall escape sequences",
        severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    ),
    # The same CVE from the tracker: one finding per package, not two.
    osv("DEBIAN-CVE-2026-0001", "Debian:12", "util-linux", [{"introduced": "0"}, {"fixed": "2.38.1-5+deb12u4"}], upstream=["CVE-2026-0001"]),
    # systemd fixed at 252.39-1: the installed 252.39-1~deb12u2 sorts before it.
    osv(
        "DEBIAN-CVE-2026-0002",
        "Debian:12",
        "systemd",
        [{"introduced": "0"}, {"fixed": "252.39-1"}],
        upstream=["CVE-2026-0002"],
        ecosystem_specific={"urgency": "low"},
    ),
    # bash fixed at its source version: the binNMU binary is not affected.
    osv("DEBIAN-CVE-2026-0003", "Debian:12", "bash", [{"introduced": "0"}, {"fixed": "5.2.15-2"}], upstream=["CVE-2026-0003"]),
    # e2fsprogs, unfixed: logsave was removed by the top layer.
    osv("DEBIAN-CVE-2026-0004", "Debian:12", "e2fsprogs", [{"introduced": "0"}], upstream=["CVE-2026-0004"]),
    # Another release and another distribution: no match.
    osv("DEBIAN-CVE-2026-0005", "Debian:11", "util-linux", [{"introduced": "0"}], upstream=["CVE-2026-0005"]),
    osv("UBUNTU-CVE-2026-0006", "Ubuntu:22.04:LTS", "util-linux", [{"introduced": "0"}], upstream=["CVE-2026-0006"]),
    # A binary name where OSV Debian uses source names: no match.
    osv("DEBIAN-CVE-2026-0007", "Debian:12", "libsystemd0", [{"introduced": "0"}], upstream=["CVE-2026-0007"]),
    # Withdrawn: no match.
    osv(
        "DEBIAN-CVE-2026-0008",
        "Debian:12",
        "bash",
        [{"introduced": "0"}],
        upstream=["CVE-2026-0008"],
        withdrawn="2026-11-02T00:00:00Z",
    ),
    # A language package (ENHANCED only), name normalised per PEP 503.
    osv(
        "GHSA-aaaa-bbbb-cccc",
        "PyPI",
        "requests",
        [{"introduced": "0"}, {"fixed": "2.31.0"}],
        aliases=["CVE-2026-0009"],
        database_specific={"severity": "MODERATE"},
    ),
]

# What the BASIC scan of the Debian image finds.
EXPECTED_BASIC = {
    ("CVE-2026-0001", "bsdutils", "1:2.38.1-5+deb12u3", "CRITICAL"),
    ("CVE-2026-0001", "mount", "2.38.1-5+deb12u3", "CRITICAL"),
    ("CVE-2026-0002", "libsystemd0", "252.39-1~deb12u2", "LOW"),
}


def write_records(tmp_path, records, name="osv"):
    d = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    for r in records:
        (d / f"{r['id']}.json").write_text(json.dumps(r))
    return d


@pytest.fixture(scope="module")
def scanner(tmp_path_factory):
    """A server with the records above imported."""
    tmp = tmp_path_factory.mktemp("scan")
    server = Berth(tmp)
    try:
        out = server.cli("vulndb", "import", str(write_records(tmp, RECORDS)))
        assert out["imported"] == len(RECORDS)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(scanner):
    return scanner.client()


def attrs(finding):
    return {a["key"]: a["value"] for a in finding["attributes"]}


def wait_scan(ecr, repo, digest, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        r = ecr.describe_image_scan_findings(repositoryName=repo, imageId={"imageDigest": digest})
        if r["imageScanStatus"]["status"] != "IN_PROGRESS":
            return r
        assert time.monotonic() < deadline, f"scan of {digest} still IN_PROGRESS"
        time.sleep(0.2)


def all_findings(ecr, repo, digest, key="findings", **kw):
    out, token = [], None
    while True:
        args = dict(repositoryName=repo, imageId={"imageDigest": digest}, **kw)
        if token:
            args["nextToken"] = token
        r = ecr.describe_image_scan_findings(**args)
        out += r["imageScanFindings"].get(key, [])
        token = r.get("nextToken")
        if not token:
            return out


def test_vulndb_status_reports_records_and_newest_modification(scanner):
    s = scanner.cli("vulndb", "status")
    assert s["records"] == len(RECORDS)
    assert s["ecosystems"]["Debian:12"] == 7
    assert s["ecosystems"]["PyPI"] == 1
    assert s["newestModified"].startswith("2026-11-01T10:00:00")


def test_scan_on_push_finds_what_the_records_say(scanner, client, name):
    repo = name()
    client.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    digest = push_image(client, repo, debian_image_layers(), tag="v1")
    # botocore's waiter, unchanged, through the aws CLI.
    subprocess.run(
        [
            "aws", "ecr", "wait", "image-scan-complete",
            "--repository-name", repo, "--image-id", "imageTag=v1",
            "--endpoint-url", scanner.endpoint, "--region", "us-east-1",
        ],
        env=dict(scanner.env, AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
                 AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        check=True,
        timeout=120,
    )
    r = client.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "v1"})
    assert r["imageScanStatus"] == {"status": "COMPLETE", "description": "The scan was completed successfully."}
    assert r["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    body = r["imageScanFindings"]
    got = {(f["name"], attrs(f)["package_name"], attrs(f)["package_version"], f["severity"]) for f in body["findings"]}
    assert got == EXPECTED_BASIC, body["findings"]
    assert body["findingSeverityCounts"] == {"CRITICAL": 2, "LOW": 1}
    assert body["vulnerabilitySourceUpdatedAt"].isoformat().startswith("2026-11-01T10:00:00")
    assert body["imageScanCompletedAt"].timestamp() > time.time() - 600
    bsd = next(f for f in body["findings"] if attrs(f)["package_name"] == "bsdutils")
    assert attrs(bsd)["CVSS3_SCORE"] == "9.8"
    assert "security-tracker.debian.org/tracker/CVE-2026-0001" in bsd["uri"]
    assert bsd["description"] == "util-linux: wall escape sequences"
    # DescribeImages carries the same summary.
    d = client.describe_images(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["imageDetails"][0]
    assert d["imageScanStatus"]["status"] == "COMPLETE"
    assert d["imageScanFindingsSummary"]["findingSeverityCounts"] == {"CRITICAL": 2, "LOW": 1}
    listed = client.describe_images(repositoryName=repo)["imageDetails"][0]
    assert listed["imageScanFindingsSummary"]["findingSeverityCounts"] == {"CRITICAL": 2, "LOW": 1}


def metric(server, name):
    import requests

    total = 0.0
    for line in requests.get(server.endpoint + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_layer_is_inventoried_when_its_upload_commits(scanner, client, name):
    """In a repository scanned on push, a layer's inventory starts when its
    upload commits, so the manifest's scan finds it done."""
    repo = name()
    client.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    # A layer big enough to be worth it (random bytes beside the status file).
    base = tar_of({"usr/lib/os-release": OS_RELEASE, "var/lib/dpkg/status": STATUS, "blob": os.urandom(256 << 10)})
    media, raw, blob = gz_layer(base)
    misses = metric(scanner, "berth_scan_layer_cache_misses_total")
    upload_blob(client, repo, blob)
    deadline = time.monotonic() + 30
    while metric(scanner, "berth_scan_layer_cache_misses_total") < misses + 1:
        assert time.monotonic() < deadline, "the uploaded layer was not inventoried"
        time.sleep(0.1)
    hits = metric(scanner, "berth_scan_layer_cache_hits_total")
    misses = metric(scanner, "berth_scan_layer_cache_misses_total")
    digest = push_image(client, repo, [(media, raw, blob)])
    r = wait_scan(client, repo, digest)
    assert r["imageScanStatus"]["status"] == "COMPLETE"
    # The scan read nothing: the layer came from the cache.
    assert metric(scanner, "berth_scan_layer_cache_misses_total") == misses
    assert metric(scanner, "berth_scan_layer_cache_hits_total") >= hits + 1
    # In a repository not scanned on push nothing is read.
    quiet = name("quiet")
    client.create_repository(repositoryName=quiet)
    before = metric(scanner, "berth_scan_layer_cache_misses_total")
    upload_blob(client, quiet, gzip.compress(tar_of({"x": os.urandom(128 << 10)}), mtime=0))
    time.sleep(1)
    assert metric(scanner, "berth_scan_layer_cache_misses_total") == before


def test_paging_walks_every_finding_once(scanner, client, name):
    repo = name()
    client.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    digest = push_image(client, repo, debian_image_layers())
    wait_scan(client, repo, digest)
    whole = all_findings(client, repo, digest)
    paged = all_findings(client, repo, digest, maxResults=1)
    assert len(paged) == 3 and paged == whole
    # Highest severity first.
    assert [f["severity"] for f in paged] == ["CRITICAL", "CRITICAL", "LOW"]
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.describe_image_scan_findings(repositoryName=repo, imageId={"imageDigest": digest}, nextToken="garbage")


def test_manual_scan_and_its_quota(scanner, client, name):
    repo = name()
    client.create_repository(repositoryName=repo)
    digest = push_image(client, repo, debian_image_layers(), tag="m1")
    with pytest.raises(client.exceptions.ScanNotFoundException):
        client.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "m1"})
    r = client.start_image_scan(repositoryName=repo, imageId={"imageTag": "m1"})
    assert r["imageScanStatus"] == {"status": "IN_PROGRESS"}
    assert r["imageId"]["imageDigest"] == digest
    done = wait_scan(client, repo, digest)
    assert done["imageScanStatus"]["status"] == "COMPLETE"
    # ECR: one scan per image per 24 hours.
    with pytest.raises(client.exceptions.LimitExceededException):
        client.start_image_scan(repositoryName=repo, imageId={"imageDigest": digest})
    with pytest.raises(client.exceptions.ImageNotFoundException):
        client.start_image_scan(repositoryName=repo, imageId={"imageTag": "nope"})
    with pytest.raises(client.exceptions.RepositoryNotFoundException):
        client.start_image_scan(repositoryName=repo + "-missing", imageId={"imageTag": "m1"})


def test_images_without_an_os_and_artifacts(scanner, client, name):
    repo = name()
    client.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    scratch = push_image(client, repo, [gz_layer(tar_of({"app/hello": b"\x7fELF..."}))])
    r = wait_scan(client, repo, scratch)
    assert r["imageScanStatus"]["status"] == "UNSUPPORTED_IMAGE"
    assert "operating system" in r["imageScanStatus"]["description"]
    # An artifact (not a container image) is not scanned on push and cannot be scanned.
    art = push_image(client, repo, [(LAYER_TAR, b"x", b"x")], config_media_type="application/vnd.example.thing.v1+json")
    with pytest.raises(client.exceptions.ScanNotFoundException):
        client.describe_image_scan_findings(repositoryName=repo, imageId={"imageDigest": art})
    with pytest.raises(client.exceptions.UnsupportedImageTypeException):
        client.start_image_scan(repositoryName=repo, imageId={"imageDigest": art})


def test_a_corrupt_layer_fails_the_scan_with_a_reason(scanner, client, name):
    repo = name()
    client.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    good = gzip.compress(tar_of({"usr/lib/os-release": OS_RELEASE, "var/lib/dpkg/status": STATUS}), mtime=0)
    truncated = good[: len(good) // 2]
    digest = push_image(client, repo, [(LAYER_GZIP, b"", truncated)])
    r = wait_scan(client, repo, digest)
    assert r["imageScanStatus"]["status"] == "FAILED"
    assert sha256(truncated) in r["imageScanStatus"]["description"]
    # The server is fine: the next image scans.
    ok = push_image(client, repo, debian_image_layers())
    assert wait_scan(client, repo, ok)["imageScanStatus"]["status"] == "COMPLETE"


def test_an_index_is_scanned_per_child(scanner, client, name):
    repo = name()
    client.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    a = push_image(client, repo, debian_image_layers())
    b = push_image(client, repo, debian_image_layers({"etc/motd": b"arm"}), platform={"architecture": "arm64"})
    sizes = {}
    for d in (a, b):
        m = client.batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": d}])["images"][0]["imageManifest"]
        sizes[d] = len(m.encode())
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": a, "size": sizes[a], "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": b, "size": sizes[b], "platform": {"os": "linux", "architecture": "arm64"}},
            ],
        }
    )
    idx = client.put_image(repositoryName=repo, imageManifest=index, imageManifestMediaType=OCI_INDEX, imageTag="multi")[
        "image"
    ]["imageId"]["imageDigest"]
    r = wait_scan(client, repo, idx)
    assert r["imageScanStatus"]["status"] == "COMPLETE"
    got = {(f["name"], attrs(f)["package_name"]) for f in r["imageScanFindings"]["findings"]}
    assert got == {(n, p) for n, p, _, _ in EXPECTED_BASIC}
    for child in (a, b):
        assert wait_scan(client, repo, child)["imageScanStatus"]["status"] == "COMPLETE"


def test_an_osv_all_zip_imports_like_its_files(scanner, tmp_path):
    import zipfile
    archive = tmp_path / "Debian-all.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for r in RECORDS:
            z.writestr(f"{r['id']}.json", json.dumps(r))
    before = scanner.cli("vulndb", "status")
    out = scanner.cli("vulndb", "import", str(archive))
    assert out["imported"] == len(RECORDS)
    after = scanner.cli("vulndb", "status")
    # The same records again: replaced by id, nothing added.
    assert after["records"] == before["records"] and after["ecosystems"] == before["ecosystems"]
    # A zip member that is not OSV names the archive and the member.
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("GOOD.json", json.dumps(RECORDS[0]))
        z.writestr("nope.json", "[1, 2")
    res = scanner.cli_run("vulndb", "import", str(bad))
    assert res.returncode != 0 and "bad.zip!nope.json" in res.stderr, res.stderr


def test_bad_osv_data_imports_nothing(scanner, tmp_path):
    before = scanner.cli("vulndb", "status")
    d = write_records(tmp_path, [osv("GOOD-1", "Debian:12", "zlib", [{"introduced": "0"}])], "bad")
    (d / "broken.json").write_text('{"id": "BROKEN-1", "modified": ')
    out = scanner.cli_run("vulndb", "import", str(d))
    assert out.returncode != 0
    assert "broken.json" in out.stderr and "nothing was imported" in out.stderr
    (d / "broken.json").write_text(json.dumps({"id": "NO-MODIFIED", "affected": []}))
    out = scanner.cli_run("vulndb", "import", str(d))
    assert out.returncode != 0 and "broken.json" in out.stderr
    assert scanner.cli("vulndb", "status") == before


def test_sbom_of_a_scanned_image(scanner, client, name):
    repo = name()
    client.create_repository(repositoryName=repo)
    push_image(client, repo, debian_image_layers(), tag="s1")
    bom = scanner.cli("scan", "sbom", f"{repo}:s1")
    assert bom["bomFormat"] == "CycloneDX"
    purls = {c.get("purl", "") for c in bom["components"]}
    assert any(p.startswith("pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12") for p in purls), purls
    assert not any("/logsave@" in p for p in purls), "logsave was removed by the top layer"
    assert not any("/oldpkg@" in p for p in purls), "oldpkg is not installed"


# ---- registry configuration: a server of its own, since rules are registry-wide ----


@pytest.fixture(scope="module")
def rules_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scan-rules")
    server = Berth(tmp)
    try:
        server.cli("vulndb", "import", str(write_records(tmp, RECORDS)))
        yield server
    finally:
        server.stop()


def test_registry_rules_and_their_precedence(rules_server):
    ecr = rules_server.client()
    default = ecr.get_registry_scanning_configuration()
    assert default["registryId"] == ACCOUNT
    assert default["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}
    with pytest.raises(ecr.exceptions.ClientError) as e:
        ecr.put_registry_scanning_configuration(
            scanType="BASIC",
            rules=[{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}],
        )
    assert e.value.response["Error"]["Code"] == "ValidationException"
    put = ecr.put_registry_scanning_configuration(
        scanType="BASIC",
        rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "prod*", "filterType": "WILDCARD"}]}],
    )
    assert put["registryScanningConfiguration"]["rules"][0]["scanFrequency"] == "SCAN_ON_PUSH"
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == put["registryScanningConfiguration"]
    for repo in ("prod-api", "dev-api", "dev-own"):
        ecr.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": repo == "dev-own"})
    cfg = ecr.batch_get_repository_scanning_configuration(repositoryNames=["prod-api", "dev-api", "dev-own", "nope"])
    by = {c["repositoryName"]: c for c in cfg["scanningConfigurations"]}
    assert by["prod-api"]["scanFrequency"] == "SCAN_ON_PUSH" and by["prod-api"]["scanOnPush"] is True
    assert by["prod-api"]["appliedScanFilters"] == [{"filter": "prod*", "filterType": "WILDCARD"}]
    assert by["dev-api"]["scanFrequency"] == "MANUAL" and by["dev-api"]["scanOnPush"] is False
    # BASIC: the repository's own scanOnPush still counts.
    assert by["dev-own"]["scanFrequency"] == "SCAN_ON_PUSH"
    assert cfg["failures"] == [{"repositoryName": "nope", "failureCode": "REPOSITORY_NOT_FOUND", "failureReason": "REPOSITORY_NOT_FOUND"}]
    prod = push_image(ecr, "prod-api", debian_image_layers())
    dev = push_image(ecr, "dev-api", debian_image_layers())
    assert wait_scan(ecr, "prod-api", prod)["imageScanStatus"]["status"] == "COMPLETE"
    with pytest.raises(ecr.exceptions.ScanNotFoundException):
        ecr.describe_image_scan_findings(repositoryName="dev-api", imageId={"imageDigest": dev})
    # PutImageScanningConfiguration turns a repository's own setting on.
    r = ecr.put_image_scanning_configuration(repositoryName="dev-api", imageScanningConfiguration={"scanOnPush": True})
    assert r["imageScanningConfiguration"] == {"scanOnPush": True}
    repo = ecr.describe_repositories(repositoryNames=["dev-api"])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    dev2 = push_image(ecr, "dev-api", debian_image_layers())
    assert wait_scan(ecr, "dev-api", dev2)["imageScanStatus"]["status"] == "COMPLETE"


def test_enhanced_continuous_scanning_rematches_after_an_import(rules_server, tmp_path):
    ecr = rules_server.client()
    ecr.put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "cont", "filterType": "WILDCARD"}]}],
    )
    try:
        ecr.create_repository(repositoryName="cont-app")
        digest = push_image(
            ecr,
            "cont-app",
            debian_image_layers({"usr/lib/python3/dist-packages/requests-2.25.0.dist-info/METADATA": DIST_INFO_METADATA}),
        )
        r = wait_scan(ecr, "cont-app", digest)
        assert r["imageScanStatus"]["status"] == "COMPLETE"
        enhanced = all_findings(ecr, "cont-app", digest, key="enhancedFindings")
        names = {(f["packageVulnerabilityDetails"]["vulnerabilityId"], f["packageVulnerabilityDetails"]["vulnerablePackages"][0]["name"]) for f in enhanced}
        assert ("CVE-2026-0009", "Requests") in names or ("CVE-2026-0009", "requests") in names, names
        assert ("CVE-2026-0001", "bsdutils") in names
        py = next(f for f in enhanced if f["packageVulnerabilityDetails"]["vulnerabilityId"] == "CVE-2026-0009")
        assert py["severity"] == "MEDIUM" and py["status"] == "ACTIVE"
        assert py["packageVulnerabilityDetails"]["vulnerablePackages"][0]["fixedInVersion"] == "2.31.0"
        before = r["imageScanFindings"]["findingSeverityCounts"]
        # A second import: a new advisory for bash, and the systemd one withdrawn.
        second = [
            osv("DEBIAN-CVE-2026-0010", "Debian:12", "bash", [{"introduced": "0"}], upstream=["CVE-2026-0010"],
                modified=MODIFIED_2, ecosystem_specific={"urgency": "high"}),
            osv("DEBIAN-CVE-2026-0002", "Debian:12", "systemd", [{"introduced": "0"}, {"fixed": "252.39-1"}],
                upstream=["CVE-2026-0002"], modified=MODIFIED_2, withdrawn=MODIFIED_2),
        ]
        rules_server.cli("vulndb", "import", str(write_records(tmp_path, second, "second")))
        deadline = time.monotonic() + 60
        while True:
            r = ecr.describe_image_scan_findings(repositoryName="cont-app", imageId={"imageDigest": digest})
            counts = r["imageScanFindings"]["findingSeverityCounts"]
            if counts != before:
                break
            assert time.monotonic() < deadline, "the re-match did not happen"
            time.sleep(0.3)
        assert r["imageScanFindings"]["vulnerabilitySourceUpdatedAt"].isoformat().startswith("2026-11-20T08:30:00")
        enhanced = all_findings(ecr, "cont-app", digest, key="enhancedFindings")
        status = {f["packageVulnerabilityDetails"]["vulnerabilityId"]: f["status"] for f in enhanced}
        assert status["CVE-2026-0010"] == "ACTIVE"
        assert status["CVE-2026-0002"] == "CLOSED"
        assert counts.get("HIGH") == 1 and "LOW" not in counts
    finally:
        ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])

"""Encryption at rest under KMS keys, with boto3 and the aws CLI against the
real server: repositories with different keys sharing a layer; what
disabling, scheduling deletion, cancelling and rotating a key does to pushes
and pulls over /v2/ and the ECR API; crypto-shredding after the waiting
period (the server restarted under faketime); mounts across repositories
follow ECR's rule (same encryption type and key).
"""

import base64
import hashlib
import json
import os
import shutil
import types
import uuid

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import ACCOUNT, Berth, aws_cli

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def kms_client(server):
    return server.client(service="kms")


def cli(server, *args):
    """The aws CLI against `server`."""
    return aws_at(server.endpoint, *args)


def upload(ecr, repo, data):
    have = ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[sha256(data)])
    if have["layers"] and have["layers"][0].get("layerAvailability") == "AVAILABLE":
        return
    up = ecr.initiate_layer_upload(repositoryName=repo)
    ecr.upload_layer_part(
        repositoryName=repo, uploadId=up["uploadId"], partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data
    )
    ecr.complete_layer_upload(repositoryName=repo, uploadId=up["uploadId"], layerDigests=[sha256(data)])


def push_image(ecr, repo, layers, tag):
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {"tag": tag}}, "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    for b in [config, *layers]:
        upload(ecr, repo, b)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256(config)},
            "layers": [{"mediaType": LAYER, "size": len(b), "digest": sha256(b)} for b in layers],
        }
    )
    ecr.put_image(repositoryName=repo, imageManifest=manifest, imageManifestMediaType=OCI_MANIFEST, imageTag=tag)
    return manifest


class V2:
    """The /v2/ API with a registry token, as docker uses it."""

    def __init__(self, server, ecr):
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        user, password = base64.b64decode(token).decode().split(":", 1)
        self.auth = (user, password)
        self.base = server.endpoint

    def manifest(self, repo, ref):
        return requests.get(
            f"{self.base}/v2/{repo}/manifests/{ref}", auth=self.auth, headers={"Accept": OCI_MANIFEST}, timeout=30
        )

    def blob(self, repo, digest, range_=None):
        h = {"Range": range_} if range_ else {}
        return requests.get(f"{self.base}/v2/{repo}/blobs/{digest}", auth=self.auth, headers=h, timeout=30)

    def start_upload(self, repo, mount=None, source=None):
        q = f"?mount={mount}&from={source}" if mount else ""
        return requests.post(f"{self.base}/v2/{repo}/blobs/uploads/{q}", auth=self.auth, timeout=30)


def pulls(v2, repo, manifest, layers):
    m = v2.manifest(repo, "v1")
    if m.status_code != 200:
        return m
    assert m.content == manifest.encode()
    for b in layers:
        r = v2.blob(repo, sha256(b))
        if r.status_code != 200:
            return r
        assert r.content == b
    return None


def denied_naming(resp, arn):
    assert resp is not None, "the pull succeeded"
    assert resp.status_code == 403, (resp.status_code, resp.text)
    body = resp.json()
    assert body["errors"][0]["code"] == "DENIED", body
    assert arn in body["errors"][0]["message"], body


@pytest.fixture(scope="module")
def kms(berth):
    return kms_client(berth)


def new_repo(ecr, name, key=None, enc="KMS"):
    cfg = {"encryptionType": enc}
    if key:
        cfg["kmsKey"] = key
    return ecr.create_repository(repositoryName=name, encryptionConfiguration=cfg)["repository"]


def test_repositories_with_different_keys_share_a_layer(berth, ecr, kms, name):
    k1 = kms.create_key(Description="team one")["KeyMetadata"]
    # The second key with the aws CLI, by alias.
    out = cli(berth, "kms", "create-key", "--description", "team two")
    assert out.returncode == 0, out.stderr
    k2 = json.loads(out.stdout)["KeyMetadata"]
    alias = f"alias/{name('two')}"
    assert cli(berth, "kms", "create-alias", "--alias-name", alias, "--target-key-id", k2["KeyId"]).returncode == 0
    a, b, c = name("a"), name("b"), name("c")
    ra = new_repo(ecr, a, k1["Arn"])
    rb = new_repo(ecr, b, alias)
    rc = new_repo(ecr, c, enc="AES256")
    # DescribeRepositories reports the key ARN (the alias resolved).
    assert ra["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": k1["Arn"]}
    desc = ecr.describe_repositories(repositoryNames=[b])["repositories"][0]
    assert desc["encryptionConfiguration"]["kmsKey"] == k2["Arn"], desc
    assert rc["encryptionConfiguration"] == {"encryptionType": "AES256"}

    shared = os.urandom(200_000)
    own = {r: os.urandom(70_000) for r in (a, b, c)}
    manifests = {r: push_image(ecr, r, [shared, own[r]], "v1") for r in (a, b, c)}
    v2 = V2(berth, ecr)
    for r in (a, b, c):
        assert pulls(v2, r, manifests[r], [shared, own[r]]) is None

    # Disable key one: repository a refuses pulls and pushes, naming the key;
    # b and c, holding the same layer, are untouched.
    kms.disable_key(KeyId=k1["KeyId"])
    denied_naming(pulls(v2, a, manifests[a], [shared, own[a]]), k1["Arn"])
    denied_naming(v2.blob(a, sha256(shared)), k1["Arn"])
    denied_naming(v2.start_upload(a), k1["Arn"])
    for r in (b, c):
        assert pulls(v2, r, manifests[r], [shared, own[r]]) is None
    with pytest.raises(ClientError) as e:
        ecr.batch_get_image(repositoryName=a, imageIds=[{"imageTag": "v1"}])
        raise AssertionError("BatchGetImage succeeded")
    assert e.value.response["Error"]["Code"] == "KmsException", e.value.response
    with pytest.raises(ClientError) as e:
        ecr.initiate_layer_upload(repositoryName=a)
    assert e.value.response["Error"]["Code"] == "KmsException"
    assert k1["Arn"] in e.value.response["Error"]["Message"]
    # The aws CLI shows the same.
    out = cli(berth, "ecr", "batch-get-image", "--repository-name", a, "--image-ids", "imageTag=v1")
    assert "KmsException" in (out.stderr + out.stdout), out
    # A push to b of a layer that only a (disabled key) holds still works.
    mb2 = push_image(ecr, b, [own[a]], "v2")
    assert v2.manifest(b, "v2").content == mb2.encode()
    assert v2.blob(b, sha256(own[a])).content == own[a]
    denied_naming(v2.blob(a, sha256(own[a])), k1["Arn"])

    # Enabled again, everything is back.
    kms.enable_key(KeyId=k1["KeyId"])
    for r in (a, b, c):
        assert pulls(v2, r, manifests[r], [shared, own[r]]) is None
    assert ecr.batch_get_image(repositoryName=a, imageIds=[{"imageTag": "v1"}])["images"]

    # Range reads through a KMS key.
    r = v2.blob(b, sha256(shared), "bytes=65500-65600")
    assert r.status_code == 206 and r.content == shared[65500:65601]


def test_pending_deletion_cancel_and_rotation(berth, ecr, kms, name):
    k = kms.create_key()["KeyMetadata"]
    repo = name()
    new_repo(ecr, repo, k["KeyId"])
    layer = os.urandom(100_000)
    m = push_image(ecr, repo, [layer], "v1")
    v2 = V2(berth, ecr)
    assert pulls(v2, repo, m, [layer]) is None
    # Rotation keeps old data readable and new data writable.
    kms.enable_key_rotation(KeyId=k["KeyId"])
    kms.rotate_key_on_demand(KeyId=k["KeyId"])
    assert pulls(v2, repo, m, [layer]) is None
    layer2 = os.urandom(90_000)
    m2 = push_image(ecr, repo, [layer2], "v2")
    assert v2.manifest(repo, "v2").content == m2.encode()
    assert v2.blob(repo, sha256(layer2)).content == layer2
    # Pending deletion: refused like a disabled key.
    out = cli(berth, "kms", "schedule-key-deletion", "--key-id", k["KeyId"], "--pending-window-in-days", "7")
    assert out.returncode == 0, out.stderr
    denied_naming(pulls(v2, repo, m, [layer]), k["Arn"])
    with pytest.raises(ClientError) as e:
        push_image(ecr, repo, [os.urandom(1000)], "v3")
    assert e.value.response["Error"]["Code"] == "KmsException"
    # Cancelled, the key is disabled (as in AWS) until enabled.
    kms.cancel_key_deletion(KeyId=k["KeyId"])
    denied_naming(pulls(v2, repo, m, [layer]), k["Arn"])
    kms.enable_key(KeyId=k["KeyId"])
    assert pulls(v2, repo, m, [layer]) is None


def test_mounts_need_the_same_encryption(berth, ecr, kms, name):
    k = kms.create_key()["KeyMetadata"]
    src, same, other = name("src"), name("same"), name("other")
    new_repo(ecr, src, k["Arn"])
    new_repo(ecr, same, k["Arn"])
    new_repo(ecr, other, enc="AES256")
    layer = os.urandom(5000)
    upload(ecr, src, layer)
    v2 = V2(berth, ecr)
    # Same type and key: mounted (201). Different: refused, an upload starts (202).
    assert v2.start_upload(same, sha256(layer), src).status_code == 201
    assert v2.start_upload(other, sha256(layer), src).status_code == 202


def aws_at(endpoint, *args, faketime=None):
    """The aws CLI against `endpoint`, optionally under faketime (a server
    running days ahead refuses signatures made at the real time)."""
    return aws_cli(endpoint, *args, faketime=faketime)


def local_blobs(server, blobs):
    """`server`'s metadata store with blobs in a directory: a server run
    days ahead cannot use S3 (it refuses requests signed in the future)."""
    store = list(server.store_args)
    if "--storage-url" in store:
        store[store.index("--storage-url") + 1] = f"file://{blobs}"
    return types.SimpleNamespace(data_dir=server.data_dir, store_args=store, s3_prefix=None, env=server.env)


def test_deleted_key_shreds_what_only_it_protected(tmp_path, name):
    """A key deleted after its waiting period: the server, restarted eight
    days later (faketime), says so; a layer also held under another key
    still reads there."""
    if not shutil.which("faketime"):
        raise RuntimeError("faketime is needed (apt-get install faketime; .ci/run does)")
    fresh = Berth(tmp_path / "fresh")
    fresh.stop()
    stores = local_blobs(fresh, tmp_path / "blobs")
    server = Berth(tmp_path / "now", reuse=stores)
    try:
        ecr, kms = server.client(), kms_client(server)
        k = kms.create_key()["KeyMetadata"]
        doomed, kept = name("doomed"), name("kept")
        new_repo(ecr, doomed, k["Arn"])
        new_repo(ecr, kept, enc="AES256")
        shared, own = os.urandom(80_000), os.urandom(80_000)
        push_image(ecr, doomed, [shared, own], "v1")
        mk = push_image(ecr, kept, [shared], "v1")
        kms.schedule_key_deletion(KeyId=k["KeyId"], PendingWindowInDays=7)
    finally:
        server.stop()
    later = Berth(tmp_path / "later", reuse=stores, wrapper=["faketime", "-f", "+8d"])
    try:
        # The key is gone: KMS says so.
        out = aws_at(later.endpoint, "kms", "describe-key", "--key-id", k["KeyId"], faketime="+8d")
        assert out.returncode != 0 and "NotFoundException" in out.stderr, out
        token = aws_at(later.endpoint, "ecr", "get-login-password", faketime="+8d")
        assert token.returncode == 0, token.stderr
        auth = ("AWS", token.stdout.strip())
        base = later.endpoint
        # What only it protected is unreadable, and Berth says why.
        r = requests.get(f"{base}/v2/{doomed}/blobs/{sha256(own)}", auth=auth, timeout=30)
        assert r.status_code == 403, r.text
        assert "deleted" in r.json()["errors"][0]["message"], r.text
        r = requests.get(f"{base}/v2/{doomed}/manifests/v1", auth=auth, headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 403, r.text
        # The shared layer reads through the repository whose key is alive.
        r = requests.get(f"{base}/v2/{kept}/manifests/v1", auth=auth, headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 200 and r.content == mk.encode()
        r = requests.get(f"{base}/v2/{kept}/blobs/{sha256(shared)}", auth=auth, timeout=30)
        assert r.status_code == 200 and r.content == shared
    finally:
        later.stop()

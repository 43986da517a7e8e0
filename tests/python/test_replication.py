"""Replication and repository creation templates with boto3, the aws CLI and
docker, across real Berth deployments on loopback:

- `source`: us-east-1, accounts 123456789012 (primary) and 222222222222,
  with `[[peers]]` entries for eu-west-1 (the secret in a file) and
  ap-southeast-2 (the secret in a variable);
- `dest`: eu-west-1, accounts 123456789012 and 333333333333;
- `third`: ap-southeast-2, account 123456789012.

Cross-region (source → dest over /v2/), cross-account in one deployment
(123456789012 → 222222222222 in us-east-1, in process, no bytes copied) and
cross-region cross-account (→ 333333333333 in eu-west-1), each decided by the
destination registry's policy; images, indexes with their children, referrers;
filters; templates at the destination; a destination down then caught up.
"""

import base64
import json
import os
import re
import subprocess
import time
import urllib.parse

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Berth, aws_cli, sha256, upload_blob

OTHER = "222222222222"
FAR = "333333333333"
DEST_REGION = "eu-west-1"
THIRD_REGION = "ap-southeast-2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def client_of(server, region, key_id=ROOT_KEY_ID, secret=ROOT_SECRET):
    return boto3.session.Session().client(
        "ecr",
        region_name=region,
        endpoint_url=server.endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "legacy"}, read_timeout=60),
    )


def start_dest(tmp, reuse=None, port=None):
    return Berth(tmp, ["--region", DEST_REGION], reuse=reuse, port=port)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    dest = start_dest(tmp_path_factory.mktemp("dest"))
    secret_file = tmp_path_factory.mktemp("secrets") / "peer-secret"
    secret_file.write_text(ROOT_SECRET + "\n")
    os.chmod(secret_file, 0o600)
    config = tmp_path_factory.mktemp("config") / "berth.toml"
    third = Berth(tmp_path_factory.mktemp("third"), ["--region", THIRD_REGION])
    config.write_text(
        "[[peers]]\n"
        f'region = "{DEST_REGION}"\n'
        f'endpoint = "{dest.endpoint}"\n'
        f'access_key_id = "{ROOT_KEY_ID}"\n'
        f'secret_access_key_file = "{secret_file}"\n'
        "[[peers]]\n"
        f'region = "{THIRD_REGION}"\n'
        f'endpoint = "{third.endpoint}/"\n'
        f'access_key_id = "{ROOT_KEY_ID}"\n'
        'secret_access_key_env = "THIRD_PEER_SECRET"\n'
    )
    os.environ["THIRD_PEER_SECRET"] = ROOT_SECRET
    try:
        source = Berth(tmp_path_factory.mktemp("source"), ["--config", str(config)])
    finally:
        del os.environ["THIRD_PEER_SECRET"]
    other = source.iam("create-account", "--account-id", OTHER)
    far = dest.iam("create-account", "--account-id", FAR)
    w = {
        "source": source,
        "dest": dest,
        "third": third,
        "config": config,
        "src": source.client(),
        "dst": client_of(dest, DEST_REGION),
        "other": source.client(other["AccessKeyId"], other["SecretAccessKey"]),
        "far": client_of(dest, DEST_REGION, far["AccessKeyId"], far["SecretAccessKey"]),
    }
    try:
        yield w
    finally:
        w["source"].stop()
        w["dest"].stop()
        w["third"].stop()


def grant_replication(ecr, registry, to_account):
    ecr.put_registry_policy(
        policyText=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ReplicationFrom",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{to_account}:root"},
                        "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                        "Resource": f"arn:aws:ecr:*:{registry}:repository/*",
                    }
                ],
            }
        )
    )


def configure(ecr, rules):
    return ecr.put_replication_configuration(replicationConfiguration={"rules": rules})


def rule(*dests, filters=()):
    r = {"destinations": [{"region": reg, "registryId": acct} for reg, acct in dests]}
    if filters:
        r["repositoryFilters"] = [{"filter": f, "filterType": "PREFIX_MATCH"} for f in filters]
    return r


def image_manifest(ecr, repo, layers, arch="amd64", subject=None, artifact_type=None):
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    for b in [config, *layers]:
        upload_blob(ecr, repo, b)
    m = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256(config)},
        "layers": [{"mediaType": LAYER, "size": len(b), "digest": sha256(b)} for b in layers],
    }
    if subject is not None:
        m["subject"] = subject
    if artifact_type is not None:
        m["artifactType"] = artifact_type
    return json.dumps(m)


def push(ecr, repo, layers, tag=None, **kw):
    manifest = image_manifest(ecr, repo, layers, **kw)
    args = dict(repositoryName=repo, imageManifest=manifest, imageManifestMediaType=OCI_MANIFEST)
    if tag:
        args["imageTag"] = tag
    digest = ecr.put_image(**args)["image"]["imageId"]["imageDigest"]
    return digest, manifest


def statuses(ecr, repo, digest):
    out = ecr.describe_image_replication_status(repositoryName=repo, imageId={"imageDigest": digest})
    return {(s["region"], s["registryId"]): s for s in out["replicationStatuses"]}


def wait_status(ecr, repo, digest, want, status="COMPLETE", timeout=90):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = statuses(ecr, repo, digest)
        if all(last.get(w, {}).get("status") == status for w in want):
            return last
        time.sleep(0.2)
    raise AssertionError(f"replication of {repo}@{digest} did not reach {status} for {want}: {last}")


class V2:
    """The /v2/ API of `server` for `registry` with a registry token."""

    def __init__(self, server, ecr, registry=ACCOUNT):
        data = ecr.get_authorization_token(registryIds=[registry])["authorizationData"][0]
        user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
        self.auth = (user, password)
        self.base = server.endpoint
        self.host = f"{registry}.{server.addr}"

    def get(self, path, **kw):
        headers = kw.pop("headers", {})
        headers["Host"] = self.host
        return requests.get(self.base + path, auth=self.auth, headers=headers, timeout=30, **kw)

    def manifest(self, repo, ref):
        return self.get(
            f"/v2/{repo}/manifests/{ref}",
            headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        )

    def blob(self, repo, digest):
        return self.get(f"/v2/{repo}/blobs/{digest}")


def v2_push(v2, repo, layer, tag):
    """Push a one-layer image over /v2/ (as docker does: a monolithic upload
    per blob, then the manifest by tag)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    for blob in (config, layer):
        r = requests.post(f"{v2.base}/v2/{repo}/blobs/uploads/", auth=v2.auth, timeout=30)
        assert r.status_code == 202, r.text
        loc = urllib.parse.urljoin(v2.base, r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        r = requests.put(f"{loc}{sep}digest={sha256(blob)}", data=blob, auth=v2.auth, timeout=30)
        assert r.status_code == 201, r.text
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256(config)},
        "layers": [{"mediaType": LAYER, "size": len(layer), "digest": sha256(layer)}],
    })
    r = requests.put(f"{v2.base}/v2/{repo}/manifests/{tag}", data=manifest, auth=v2.auth,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]


def assert_same_image(src_v2, dst_v2, repo, ref):
    a = src_v2.manifest(repo, ref)
    b = dst_v2.manifest(repo, ref)
    assert a.status_code == 200, a.text
    assert b.status_code == 200, b.text
    assert a.content == b.content
    m = json.loads(a.content)
    for d in [m.get("config"), *m.get("layers", [])]:
        if d:
            ba, bb = src_v2.blob(repo, d["digest"]), dst_v2.blob(repo, d["digest"])
            assert bb.status_code == 200, bb.text
            assert ba.content == bb.content and sha256(bb.content) == d["digest"]
    for child in m.get("manifests", []):
        assert_same_image(src_v2, dst_v2, repo, child["digest"])


# ---- configuration --------------------------------------------------------


def test_configuration_is_stored_shown_and_cleared(world):
    src = world["src"]
    assert src.describe_registry()["replicationConfiguration"] == {"rules": []}
    rules = [rule((DEST_REGION, ACCOUNT), filters=["prod/", "team"]), rule(("us-east-1", OTHER))]
    out = configure(src, rules)
    assert out["replicationConfiguration"]["rules"] == rules
    described = src.describe_registry()
    assert described["registryId"] == ACCOUNT
    assert described["replicationConfiguration"]["rules"] == rules
    cli = world["source"].aws("ecr", "describe-registry")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["replicationConfiguration"]["rules"] == rules
    configure(src, [])
    assert src.describe_registry()["replicationConfiguration"] == {"rules": []}


@pytest.mark.parametrize(
    "rules, message",
    [
        ([rule(("us-east-1", ACCOUNT))], "cannot be the same as the source registry"),
        ([rule(("ap-south-1", ACCOUNT))], "no peer serves ap-south-1"),
        ([rule((DEST_REGION, "12345"))], "registryId"),
        ([rule((DEST_REGION, ACCOUNT))] * 11, "rules"),
        ([{"destinations": [{"region": DEST_REGION, "registryId": ACCOUNT}],
           "repositoryFilters": [{"filter": "prod", "filterType": "SUFFIX_MATCH"}]}], "filterType"),
        ([{"destinations": [{"region": DEST_REGION, "registryId": ACCOUNT}],
           "repositoryFilters": [{"filter": "Prod!", "filterType": "PREFIX_MATCH"}]}], "filter"),
    ],
)
def test_invalid_configurations_are_refused_and_change_nothing(world, rules, message):
    src = world["source"].client(validate=False)
    configure(world["src"], [rule((DEST_REGION, ACCOUNT), filters=["keep/"])])
    with pytest.raises(ClientError) as e:
        configure(src, rules)
    assert e.value.response["Error"]["Code"] in ("InvalidParameterException", "ValidationException")
    assert message in e.value.response["Error"]["Message"]
    kept = world["src"].describe_registry()["replicationConfiguration"]["rules"]
    assert kept == [rule((DEST_REGION, ACCOUNT), filters=["keep/"])]
    configure(world["src"], [])


def test_a_user_needs_the_action(world):
    source = world["source"]
    _, _, user = source.user_with_policy(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:DescribeRegistry", "Resource": "*"}]}
    )
    user.describe_registry()
    with pytest.raises(ClientError) as e:
        configure(user, [rule((DEST_REGION, ACCOUNT))])
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"


# ---- cross-region ----------------------------------------------------------


def test_an_image_replicates_to_the_peer_region_with_its_tags(world, name):
    src, dst = world["src"], world["dst"]
    repo = f"prod/{name()}"
    configure(src, [rule((DEST_REGION, ACCOUNT), filters=["prod/"])])
    src.create_repository(repositoryName=repo)
    digest, manifest = push(src, repo, [os.urandom(3000), os.urandom(70_000)], tag="v1")
    src.put_image(repositoryName=repo, imageManifest=manifest, imageManifestMediaType=OCI_MANIFEST, imageTag="latest")
    wait_status(src, repo, digest, [(DEST_REGION, ACCOUNT)])
    got = dst.describe_images(repositoryName=repo)["imageDetails"]
    assert [i["imageDigest"] for i in got] == [digest]
    assert sorted(got[0]["imageTags"]) == ["latest", "v1"]
    # The destination repository has ECR's defaults.
    r = dst.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert r["imageTagMutability"] == "MUTABLE"
    assert r["encryptionConfiguration"]["encryptionType"] == "AES256"
    assert r["repositoryArn"] == f"arn:aws:ecr:{DEST_REGION}:{ACCOUNT}:repository/{repo}"
    assert_same_image(V2(world["source"], src), V2(world["dest"], dst), repo, "v1")
    # The status through the aws CLI.
    cli = world["source"].aws(
        "ecr", "describe-image-replication-status", "--repository-name", repo, "--image-id", f"imageDigest={digest}"
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["replicationStatuses"] == [
        {"region": DEST_REGION, "registryId": ACCOUNT, "status": "COMPLETE"}
    ]
    # The destination does not replicate it further (no chaining).
    assert statuses(dst, repo, digest) == {}
    # Deletes are not replicated (as in ECR).
    src.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": digest}])
    time.sleep(1.5)
    kept = dst.describe_images(repositoryName=repo)["imageDetails"]
    assert [i["imageDigest"] for i in kept] == [digest] and sorted(kept[0]["imageTags"]) == ["latest", "v1"]
    configure(src, [])


def test_one_push_fans_out_to_two_peer_deployments(world, name):
    src = world["src"]
    repo = f"prod/{name()}"
    configure(src, [rule((DEST_REGION, ACCOUNT), (THIRD_REGION, ACCOUNT))])
    src.create_repository(repositoryName=repo)
    digest, _ = push(src, repo, [os.urandom(9000)], tag="v1")
    wait_status(src, repo, digest, [(DEST_REGION, ACCOUNT), (THIRD_REGION, ACCOUNT)])
    source_v2 = V2(world["source"], src)
    for server, region in ((world["dest"], DEST_REGION), (world["third"], THIRD_REGION)):
        assert_same_image(source_v2, V2(server, client_of(server, region)), repo, "v1")
    configure(src, [])


def test_filters_decide_what_replicates(world, name):
    src, dst = world["src"], world["dst"]
    configure(src, [rule((DEST_REGION, ACCOUNT), filters=["only/"])])
    repo = f"elsewhere/{name()}"
    src.create_repository(repositoryName=repo)
    digest, _ = push(src, repo, [os.urandom(100)], tag="x")
    time.sleep(1.5)
    assert statuses(src, repo, digest) == {}
    with pytest.raises(ClientError) as e:
        dst.describe_repositories(repositoryNames=[repo])
    assert e.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    configure(src, [])


def test_images_pushed_before_the_rule_are_not_replicated(world, name):
    src, dst = world["src"], world["dst"]
    repo = f"prod/{name()}"
    src.create_repository(repositoryName=repo)
    before, _ = push(src, repo, [os.urandom(100)], tag="old")
    configure(src, [rule((DEST_REGION, ACCOUNT))])
    after, _ = push(src, repo, [os.urandom(100)], tag="new")
    wait_status(src, repo, after, [(DEST_REGION, ACCOUNT)])
    assert statuses(src, repo, before) == {}
    ids = {i["imageDigest"] for i in dst.list_images(repositoryName=repo)["imageIds"]}
    assert ids == {after}
    configure(src, [])


def test_an_index_replicates_with_its_children_and_referrers(world, name):
    src, dst = world["src"], world["dst"]
    repo = f"prod/{name()}"
    configure(src, [rule((DEST_REGION, ACCOUNT))])
    src.create_repository(repositoryName=repo)
    children = []
    for arch in ("amd64", "arm64"):
        m = image_manifest(src, repo, [os.urandom(500)], arch=arch)
        d = src.put_image(repositoryName=repo, imageManifest=m, imageManifestMediaType=OCI_MANIFEST, imageDigest=sha256(m.encode()))[
            "image"
        ]["imageId"]["imageDigest"]
        children.append({"mediaType": OCI_MANIFEST, "size": len(m), "digest": d, "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    idx = src.put_image(repositoryName=repo, imageManifest=index, imageManifestMediaType=OCI_INDEX, imageTag="multi")["image"][
        "imageId"
    ]["imageDigest"]
    # A signature of the index, pushed after it.
    sig, _ = push(
        src,
        repo,
        [b"signature-bytes"],
        subject={"mediaType": OCI_INDEX, "size": len(index), "digest": idx},
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
    )
    for d in [idx, sig] + [c["digest"] for c in children]:
        wait_status(src, repo, d, [(DEST_REGION, ACCOUNT)])
    assert_same_image(V2(world["source"], src), V2(world["dest"], dst), repo, "multi")
    referrers = V2(world["dest"], dst).get(f"/v2/{repo}/referrers/{idx}")
    assert referrers.status_code == 200, referrers.text
    assert [m["digest"] for m in referrers.json()["manifests"]] == [sig]
    configure(src, [])


# ---- cross-account ---------------------------------------------------------


def test_cross_account_in_one_deployment_needs_the_destination_policy(world, name):
    src, other = world["src"], world["other"]
    repo = f"shared/{name()}"
    configure(src, [rule(("us-east-1", OTHER), filters=["shared/"])])
    src.create_repository(repositoryName=repo)
    digest, _ = push(src, repo, [os.urandom(2000)], tag="v1")
    failed = wait_status(src, repo, digest, [("us-east-1", OTHER)], status="FAILED")
    assert failed[("us-east-1", OTHER)]["failureCode"] == "ACCESS_DENIED"
    with pytest.raises(ClientError):
        other.describe_repositories(repositoryNames=[repo])
    # The destination grants it: the retry delivers, nothing is pushed again.
    grant_replication(other, OTHER, ACCOUNT)
    wait_status(src, repo, digest, [("us-east-1", OTHER)])
    got = other.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["images"]
    assert got[0]["imageId"]["imageDigest"] == digest
    # The bytes are shared, and readable as the destination's own.
    s, o = V2(world["source"], src), V2(world["source"], other, registry=OTHER)
    assert_same_image(s, o, repo, "v1")
    other.delete_registry_policy()
    configure(src, [])


def test_cross_region_cross_account_with_a_template_at_the_destination(world, name):
    src, far = world["src"], world["far"]
    repo = f"tmpl/{name()}"
    grant_replication(far, FAR, ACCOUNT)
    lifecycle = json.dumps(
        {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                                       "countUnit": "days", "countNumber": 14}, "action": {"type": "expire"}}]}
    )
    far.create_repository_creation_template(
        prefix="tmpl",
        appliedFor=["REPLICATION"],
        imageTagMutability="IMMUTABLE",
        resourceTags=[{"Key": "team", "Value": "platform"}],
        lifecyclePolicy=lifecycle,
    )
    configure(src, [rule((DEST_REGION, FAR), filters=["tmpl/"])])
    src.create_repository(repositoryName=repo)
    digest, _ = push(src, repo, [os.urandom(1000)], tag="v1")
    wait_status(src, repo, digest, [(DEST_REGION, FAR)])
    r = far.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert r["imageTagMutability"] == "IMMUTABLE"
    assert r["registryId"] == FAR
    tags = far.list_tags_for_resource(resourceArn=r["repositoryArn"])["tags"]
    assert tags == [{"Key": "team", "Value": "platform"}]
    assert json.loads(far.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"]) == json.loads(lifecycle)
    # An immutable tag at the destination is kept: a new image for v1 arrives without it.
    moved, _ = push(src, repo, [os.urandom(1000)], tag="v1")
    wait_status(src, repo, moved, [(DEST_REGION, FAR)])
    held = far.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["images"]
    assert held[0]["imageId"]["imageDigest"] == digest
    assert {i["imageDigest"] for i in far.list_images(repositoryName=repo)["imageIds"]} == {digest, moved}
    far.delete_repository_creation_template(prefix="tmpl")
    configure(src, [])


# ---- a destination that is down ---------------------------------------------


def test_a_destination_down_for_a_while_catches_up(world, name, tmp_path):
    src = world["src"]
    repo = f"prod/{name()}"
    configure(src, [rule((DEST_REGION, ACCOUNT))])
    src.create_repository(repositoryName=repo)
    dest = world["dest"]
    dest.stop()
    try:
        pushed = []
        for i in range(8):
            d, _ = push(src, repo, [os.urandom(4000)], tag=f"t{i}")
            pushed.append(d)
        failed = wait_status(src, repo, pushed[0], [(DEST_REGION, ACCOUNT)], status="FAILED")
        assert failed[(DEST_REGION, ACCOUNT)]["failureCode"] == "DESTINATION_UNREACHABLE"
        # The gauges are refreshed by the sweep, every 2 s.
        gauge = f'berth_replication_pending{{destination="{DEST_REGION}/{ACCOUNT}"}}'
        deadline = time.monotonic() + 10
        while gauge not in (metrics := requests.get(world["source"].endpoint + "/metrics", timeout=10).text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.2)
        status = world["source"].cli("replication", "status")
        behind = [s for s in status if (s["region"], s["registryId"]) == (DEST_REGION, ACCOUNT)][0]
        assert behind["pending"] >= 8 and behind["failing"] >= 1 and behind["lagSeconds"] > 0
        assert behind["lastFailure"].startswith("DESTINATION_UNREACHABLE")
    finally:
        world["dest"] = start_dest(tmp_path / "dest-again", reuse=dest, port=dest.port)
    dst = client_of(world["dest"], DEST_REGION)
    world["dst"] = dst
    for d in pushed:
        wait_status(src, repo, d, [(DEST_REGION, ACCOUNT)], timeout=120)
    tags = {t for i in dst.describe_images(repositoryName=repo)["imageDetails"] for t in i.get("imageTags", [])}
    assert tags == {f"t{i}" for i in range(8)}
    metrics = requests.get(world["source"].endpoint + "/metrics", timeout=10).text
    assert f'berth_replication_lag_seconds{{destination="{DEST_REGION}/{ACCOUNT}"}}' in metrics
    configure(src, [])


def test_docker_push_at_the_source_docker_pull_at_the_destination(world, name, tmp_path):
    src = world["src"]
    repo = f"prod/{name()}"
    configure(src, [rule((DEST_REGION, ACCOUNT))])
    src.create_repository(repositoryName=repo)

    def docker(config_dir, *args, stdin=None):
        env = dict(os.environ, DOCKER_CONFIG=str(config_dir))
        r = subprocess.run(["docker", *args], input=stdin, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"docker {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def login(config_dir, server, ecr):
        data = ecr.get_authorization_token()["authorizationData"][0]
        _, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
        docker(config_dir, "login", "--username", "AWS", "--password-stdin", server.addr, stdin=password)

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_bytes(os.urandom(20_000))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    push_cfg, pull_cfg = tmp_path / "push", tmp_path / "pull"
    login(push_cfg, world["source"], src)
    pushed_ref = f"{world['source'].addr}/{repo}:git-1234"
    docker(push_cfg, "build", "-q", "-t", pushed_ref, str(ctx))
    docker(push_cfg, "push", pushed_ref)
    digest = src.describe_images(repositoryName=repo)["imageDetails"][0]["imageDigest"]
    wait_status(src, repo, digest, [(DEST_REGION, ACCOUNT)])
    login(pull_cfg, world["dest"], world["dst"])
    pulled_ref = f"{world['dest'].addr}/{repo}:git-1234"
    try:
        docker(pull_cfg, "pull", pulled_ref)
        got = docker(pull_cfg, "inspect", "--format", "{{index .RepoDigests 0}}", pulled_ref).strip()
        assert got.endswith("@" + digest), got
    finally:
        for ref in (pushed_ref, pulled_ref):
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, timeout=60)
    configure(src, [])


# ---- creation templates ------------------------------------------------------


def test_template_operations_and_their_errors(world):
    src = world["src"]
    created = src.create_repository_creation_template(
        prefix="apps", appliedFor=["REPLICATION", "PULL_THROUGH_CACHE"], description="apps",
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest"}],
    )
    t = created["repositoryCreationTemplate"]
    assert created["registryId"] == ACCOUNT
    assert t["prefix"] == "apps" and t["appliedFor"] == ["REPLICATION", "PULL_THROUGH_CACHE"]
    assert t["encryptionConfiguration"] == {"encryptionType": "AES256"}
    with pytest.raises(ClientError) as e:
        src.create_repository_creation_template(prefix="apps", appliedFor=["REPLICATION"])
    assert e.value.response["Error"]["Code"] == "TemplateAlreadyExistsException"
    src.create_repository_creation_template(prefix="ROOT", appliedFor=["REPLICATION"])
    updated = src.update_repository_creation_template(prefix="apps", description="changed")["repositoryCreationTemplate"]
    assert updated["description"] == "changed" and updated["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    listed = src.describe_repository_creation_templates()["repositoryCreationTemplates"]
    assert [x["prefix"] for x in listed] == ["ROOT", "apps"]
    page = src.describe_repository_creation_templates(maxResults=1)
    assert len(page["repositoryCreationTemplates"]) == 1 and "nextToken" in page
    rest = src.describe_repository_creation_templates(maxResults=1, nextToken=page["nextToken"])
    assert [x["prefix"] for x in rest["repositoryCreationTemplates"]] == ["apps"]
    only = src.describe_repository_creation_templates(prefixes=["apps"])["repositoryCreationTemplates"]
    assert [x["prefix"] for x in only] == ["apps"]
    cli = world["source"].aws("ecr", "describe-repository-creation-templates")
    assert cli.returncode == 0, cli.stderr
    assert len(json.loads(cli.stdout)["repositoryCreationTemplates"]) == 2
    with pytest.raises(ClientError) as e:
        src.create_repository_creation_template(
            prefix="roles", appliedFor=["REPLICATION"], customRoleArn="arn:aws:iam::123456789012:role/ecr"
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "customRoleArn" in e.value.response["Error"]["Message"]
    raw = world["source"].client(validate=False)
    for bad in (dict(prefix="Bad_Prefix!", appliedFor=["REPLICATION"]), dict(prefix="ok", appliedFor=["SOMETIMES"])):
        with pytest.raises(ClientError) as e:
            raw.create_repository_creation_template(**bad)
        assert e.value.response["Error"]["Code"] in ("InvalidParameterException", "ValidationException")
    with pytest.raises(ClientError) as e:
        src.create_repository_creation_template(prefix="lc", appliedFor=["REPLICATION"], lifecyclePolicy="{not json")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    deleted = src.delete_repository_creation_template(prefix="apps")["repositoryCreationTemplate"]
    assert deleted["prefix"] == "apps"
    with pytest.raises(ClientError) as e:
        src.delete_repository_creation_template(prefix="apps")
    assert e.value.response["Error"]["Code"] == "TemplateNotFoundException"
    with pytest.raises(ClientError) as e:
        src.update_repository_creation_template(prefix="apps", description="x")
    assert e.value.response["Error"]["Code"] == "TemplateNotFoundException"
    src.delete_repository_creation_template(prefix="ROOT")
    assert src.describe_repository_creation_templates()["repositoryCreationTemplates"] == []


def test_a_create_on_push_template_creates_the_repository_for_a_push(world, name):
    source, src = world["source"], world["src"]
    src.create_repository_creation_template(
        prefix="auto", appliedFor=["CREATE_ON_PUSH"], imageTagMutability="IMMUTABLE",
        resourceTags=[{"Key": "made-by", "Value": "push"}],
    )
    try:
        repo = f"auto/{name()}"
        v2_push(V2(source, src), repo, os.urandom(300), "v1")
        r = src.describe_repositories(repositoryNames=[repo])["repositories"][0]
        assert r["imageTagMutability"] == "IMMUTABLE"
        assert src.list_tags_for_resource(resourceArn=r["repositoryArn"])["tags"] == [{"Key": "made-by", "Value": "push"}]
        # A user allowed to push but not to create repositories cannot create one.
        _, _, pusher = source.user_with_policy(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
                "ecr:GetAuthorizationToken", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchCheckLayerAvailability"]}]}
        )
        v2 = V2(source, pusher)
        r = requests.post(f"{source.endpoint}/v2/auto/{name()}/blobs/uploads/", auth=v2.auth, timeout=30)
        assert r.status_code == 403, r.text
        assert "ecr:CreateRepository" in r.json()["errors"][0]["message"]
        # Outside every CREATE_ON_PUSH template a push to a missing repository fails as before.
        r = requests.post(f"{source.endpoint}/v2/manual/{name()}/blobs/uploads/", auth=V2(source, src).auth, timeout=30)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN", r.text
    finally:
        src.delete_repository_creation_template(prefix="auto")


def test_the_peer_secret_must_be_private(world, tmp_path):
    secret = tmp_path / "open-secret"
    secret.write_text(ROOT_SECRET)
    os.chmod(secret, 0o644)
    config = tmp_path / "berth.toml"
    config.write_text(
        f'[[peers]]\nregion = "{DEST_REGION}"\nendpoint = "http://127.0.0.1:1"\n'
        f'access_key_id = "{ROOT_KEY_ID}"\nsecret_access_key_file = "{secret}"\n'
    )
    out = subprocess.run(
        [world["source"].bin, "serve", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0
    assert "readable by others" in out.stderr


# ---- several regions in one deployment ----------------------------------------

SECOND_REGION = "eu-west-2"


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    server = Berth(tmp_path_factory.mktemp("regions"), ["--region", "us-east-1", "--region", SECOND_REGION])
    try:
        yield server
    finally:
        server.stop()


def blob_bytes_received(server):
    """`berth_blob_bytes_received_total`: the bytes of every upload the server took in."""
    text = requests.get(server.endpoint + "/metrics", timeout=10).text
    return int(float(re.search(r"^berth_blob_bytes_received_total (\S+)$", text, re.M).group(1)))


def test_each_region_has_its_own_registry(regions, name):
    home, second = client_of(regions, "us-east-1"), client_of(regions, SECOND_REGION)
    repo = name()
    made = second.create_repository(repositoryName=repo)["repository"]
    assert made["repositoryArn"] == f"arn:aws:ecr:{SECOND_REGION}:{ACCOUNT}:repository/{repo}"
    assert made["registryId"] == ACCOUNT
    with pytest.raises(ClientError) as e:
        home.describe_repositories(repositoryNames=[repo])
    assert e.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    assert f"registry with id '{ACCOUNT}'" in e.value.response["Error"]["Message"]
    # The same name in the home region is another repository.
    home.create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")
    assert second.describe_repositories(repositoryNames=[repo])["repositories"][0]["imageTagMutability"] == "MUTABLE"
    # Registry-level settings are regional too.
    grant_replication(second, ACCOUNT, OTHER)
    with pytest.raises(ClientError) as e:
        home.get_registry_policy()
    assert e.value.response["Error"]["Code"] == "RegistryPolicyNotFoundException"
    second.delete_registry_policy()
    # A region this deployment does not serve is refused by SigV4's scope check.
    with pytest.raises(ClientError) as e:
        client_of(regions, "ap-south-1").describe_repositories()
    assert "region" in e.value.response["Error"]["Message"]
    cli = aws_cli(regions.endpoint, "ecr", "describe-repositories", "--region", SECOND_REGION,
                  "--repository-names", repo)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["repositories"][0]["repositoryArn"].startswith(f"arn:aws:ecr:{SECOND_REGION}:")


def test_replication_between_regions_of_one_deployment_copies_no_bytes(regions, name):
    home, second = client_of(regions, "us-east-1"), client_of(regions, SECOND_REGION)
    repo = name()
    configure(home, [rule((SECOND_REGION, ACCOUNT))])
    home.create_repository(repositoryName=repo)
    layer = os.urandom(50_000)
    digest, _ = push(home, repo, [layer], tag="v1")
    received = blob_bytes_received(regions)
    assert received >= len(layer)  # the push's own upload is counted
    wait_status(home, repo, digest, [(SECOND_REGION, ACCOUNT)])
    got = second.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["images"][0]
    assert got["imageId"]["imageDigest"] == digest
    # The delivery uploaded nothing: one stored copy of the layer serves both regions.
    assert blob_bytes_received(regions) == received
    assert regions.blob_stored(sha256(layer))
    # /v2/ picks the region by the host name ECR's way: <account>.dkr.ecr.<region>.<domain>.
    token = home.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    auth = tuple(base64.b64decode(token).decode().split(":", 1))
    accept = {"Accept": OCI_MANIFEST}
    regional = requests.get(
        f"{regions.endpoint}/v2/{repo}/blobs/{sha256(layer)}", auth=auth, timeout=30,
        headers={"Host": f"{ACCOUNT}.dkr.ecr.{SECOND_REGION}.localhost:{regions.port}"},
    )
    assert regional.status_code == 200 and regional.content == layer
    only_second = name()
    second.create_repository(repositoryName=only_second)
    second_digest, _ = push(second, only_second, [os.urandom(100)], tag="x")
    by_host = requests.get(
        f"{regions.endpoint}/v2/{only_second}/manifests/x", auth=auth, timeout=30,
        headers={**accept, "Host": f"{ACCOUNT}.dkr.ecr.{SECOND_REGION}.localhost:{regions.port}"},
    )
    assert by_host.status_code == 200 and by_host.headers["Docker-Content-Digest"] == second_digest
    bare = requests.get(f"{regions.endpoint}/v2/{only_second}/manifests/x", auth=auth, headers=accept, timeout=30)
    assert bare.status_code == 404 and bare.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    configure(home, [])

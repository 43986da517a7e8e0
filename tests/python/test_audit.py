"""The audit log (docs/audit.md), driven by the real clients: boto3 and the
aws CLI for the ECR, KMS, STS and CloudFormation APIs and for CloudTrail's
LookupEvents; plain /v2/ requests as docker sends them, and docker itself;
`berth audit verify / export / stream / prune` beside the live server; a
server killed with SIGKILL in the middle of pushes.
"""

import base64
import concurrent.futures
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests

from conftest import ACCOUNT, REGION, ROOT_KEY_ID, Berth, scale_out, sha256, upload_blob

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(scope="module")
def trail(berth):
    return berth.client(service="cloudtrail")


def lookup(trail, attribute=None, value=None, **kw):
    """Every event LookupEvents returns for one attribute, following NextToken."""
    args = dict(kw)
    if attribute:
        args["LookupAttributes"] = [{"AttributeKey": attribute, "AttributeValue": value}]
    events = []
    while True:
        page = trail.lookup_events(**args)
        events.extend(page["Events"])
        if "NextToken" not in page:
            return events
        args["NextToken"] = page["NextToken"]


def records(trail, repo, wait_for=0):
    """The CloudTrail records of repository `repo`, oldest first; waits (up
    to 10 s) until there are at least `wait_for` (reads are written in the
    writer's next batch)."""
    deadline = time.monotonic() + 10
    while True:
        out = [json.loads(e["CloudTrailEvent"]) for e in lookup(trail, "ResourceName", repo)]
        if len(out) >= wait_for or time.monotonic() > deadline:
            return list(reversed(out))
        time.sleep(0.2)


def settled(trail, repo):
    """The records of `repo` once no more arrive (reads are batched: a
    batch lingers up to 100 ms before it is written)."""
    last = None
    while True:
        now = records(trail, repo)
        if last is not None and len(now) == len(last):
            return now
        last = now
        time.sleep(0.4)


def names(recs):
    return [r["eventName"] for r in recs]


class V2:
    """/v2/ as docker speaks it, with a token from GetAuthorizationToken."""

    def __init__(self, server, ecr):
        token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        user, password = base64.b64decode(token).decode().split(":", 1)
        self.base = server.endpoint
        self.auth = (user, password)
        self.headers = {"User-Agent": "docker/28.2.2 go/go1.24 (audit test)"}

    def push(self, repo, layer, tag):
        """A one-layer image: POST + PATCH + PUT per blob, then the manifest."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        for blob in (config, layer):
            r = requests.post(f"{self.base}/v2/{repo}/blobs/uploads/", auth=self.auth, headers=self.headers, timeout=30)
            assert r.status_code == 202, r.text
            loc = urllib.parse.urljoin(self.base, r.headers["Location"])
            r = requests.patch(loc, data=blob, auth=self.auth, timeout=30,
                               headers={**self.headers, "Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            loc = urllib.parse.urljoin(self.base, r.headers["Location"])
            sep = "&" if "?" in loc else "?"
            r = requests.put(f"{loc}{sep}digest={sha256(blob)}", auth=self.auth, headers=self.headers, timeout=30)
            assert r.status_code == 201, r.text
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256(config)},
            "layers": [{"mediaType": LAYER, "size": len(layer), "digest": sha256(layer)}],
        })
        r = requests.put(f"{self.base}/v2/{repo}/manifests/{tag}", data=manifest, auth=self.auth,
                         headers={**self.headers, "Content-Type": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 201, r.text
        return r.headers["Docker-Content-Digest"], sha256(config), sha256(layer)

    def pull(self, repo, tag):
        r = requests.get(f"{self.base}/v2/{repo}/manifests/{tag}", auth=self.auth, timeout=30,
                         headers={**self.headers, "Accept": OCI_MANIFEST})
        assert r.status_code == 200, r.text
        m = r.json()
        for d in [m["config"], *m["layers"]]:
            b = requests.get(f"{self.base}/v2/{repo}/blobs/{d['digest']}", auth=self.auth, headers=self.headers, timeout=30)
            assert b.status_code == 200 and sha256(b.content) == d["digest"]
        return m


# ---- the ECR API ----------------------------------------------------------


def test_each_ecr_call_is_one_event_in_cloudtrails_shape(berth, ecr, trail, name):
    repo = name()
    created = ecr.create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")["repository"]
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=json.dumps({"rules": [{
        "rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5},
        "action": {"type": "expire"}}]}))
    ecr.describe_repositories(repositoryNames=[repo])
    ecr.delete_lifecycle_policy(repositoryName=repo)
    recs = records(trail, repo, wait_for=4)
    assert names(recs) == ["CreateRepository", "PutLifecyclePolicy", "DescribeRepositories", "DeleteLifecyclePolicy"]
    first = recs[0]
    assert first["eventSource"] == "ecr.amazonaws.com"
    assert first["awsRegion"] == REGION
    assert first["eventType"] == "AwsApiCall"
    assert first["readOnly"] is False and recs[2]["readOnly"] is True
    assert first["userIdentity"] == {
        "type": "Root", "principalId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:root",
        "accountId": ACCOUNT, "accessKeyId": ROOT_KEY_ID,
    }
    assert first["requestParameters"] == {"repositoryName": repo, "imageTagMutability": "IMMUTABLE"}
    assert first["sourceIPAddress"] == "127.0.0.1"
    assert first["userAgent"].startswith("Boto3/")
    assert first["resources"] == [{"accountId": ACCOUNT, "type": "AWS::ECR::Repository", "ARN": created["repositoryArn"]}]
    assert first["recipientAccountId"] == ACCOUNT
    assert "errorCode" not in first
    # Each event's requestID is the x-amzn-RequestId the client was answered with.
    assert len({r["requestID"] for r in recs}) == 4 and len({r["eventID"] for r in recs}) == 4
    # Read-only calls carry no responseElements; the policy text is recorded.
    assert recs[2]["responseElements"] is None
    assert "lifecyclePolicyText" in recs[1]["requestParameters"]


@pytest.mark.parametrize("service,source", [
    ("ecr", "ecr.amazonaws.com"),
    ("kms", "kms.amazonaws.com"),
    ("cloudformation", "cloudformation.amazonaws.com"),
    ("sts", "sts.amazonaws.com"),
    ("ssm", "ssm.amazonaws.com"),
])
def test_every_operation_is_exactly_one_event_named_after_it(berth, name, service, source):
    """Each operation of the service's model, called once by a user allowed
    everything (with only `repositoryName` filled in where an ECR operation
    has it, and botocore's checks off, so most fail the server's
    validation): exactly one event each, named after the operation, with
    the error's code as errorCode when it failed."""
    user, _, key_id, secret = berth.user_key({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "*", "Resource": "*"}]})
    client = berth.client(key_id, secret, validate=False, service=service)
    method = {api: py for py, api in client.meta.method_to_api_mapping.items()}
    model = client.meta.service_model
    repo = name()
    first = ["CreateRepository"] if service == "ecr" else []
    expected = {}
    # Operations signed by nobody (STS's AssumeRoleWithSAML…) are not recorded:
    # nobody authenticated.
    unsigned = {o for o in model.operation_names
                if model.operation_model(o).auth_type == "none"
                or "smithy.api#noAuth" in (model.operation_model(o).auth or [])}
    for op in first + [o for o in model.operation_names if o not in first and o not in unsigned]:
        shape = model.operation_model(op).input_shape
        params = {"repositoryName": repo} if shape is not None and "repositoryName" in shape.members else {}
        try:
            getattr(client, method[op])(**params)
            expected[op] = None
        except client.exceptions.ClientError as e:
            expected[op] = e.response["Error"]["Code"]
    assert len(expected) == len(model.operation_names) - len(unsigned) >= 1
    trail = berth.client(service="cloudtrail")
    deadline = time.monotonic() + 20
    while True:
        events = [json.loads(e["CloudTrailEvent"]) for e in lookup(trail, "Username", user)]
        if len(events) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    got = {}
    for e in events:
        assert e["eventName"] not in got, f"two events for {e['eventName']}"
        assert e["eventSource"] == source, e
        assert e["userIdentity"]["userName"] == user
        got[e["eventName"]] = e.get("errorCode")
    assert got == expected


def test_failures_and_refusals_are_recorded_with_their_error(berth, ecr, trail, name):
    repo, other = name(), name("other")
    ecr.create_repository(repositoryName=repo)
    ecr.create_repository(repositoryName=other)
    with pytest.raises(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repo)
    user, arn, client = berth.user_with_policy({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "ecr:DescribeRepositories",
        "Resource": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repo}"}]})
    client.describe_repositories(repositoryNames=[repo])
    with pytest.raises(client.exceptions.ClientError) as e:
        client.delete_repository(repositoryName=other)
    assert "AccessDenied" in str(e.value)
    recs = records(trail, repo, wait_for=4)
    assert names(recs) == ["CreateRepository", "CreateRepository", "DescribeRepositories"]
    assert recs[1]["errorCode"] == "RepositoryAlreadyExistsException"
    assert repo in recs[1]["errorMessage"]
    assert recs[1]["responseElements"] is None
    assert recs[2]["userIdentity"]["type"] == "IAMUser"
    assert recs[2]["userIdentity"]["userName"] == user
    assert recs[2]["userIdentity"]["arn"] == arn
    denied = records(trail, other, wait_for=2)
    assert names(denied) == ["CreateRepository", "DeleteRepository"]
    assert denied[1]["errorCode"] == "AccessDeniedException"
    assert "is not authorized to perform: ecr:DeleteRepository" in denied[1]["errorMessage"]
    # The repository was not deleted.
    ecr.describe_repositories(repositoryNames=[other])
    # LookupEvents by user name finds the user's calls and nothing else.
    mine = lookup(trail, "Username", user)
    assert sorted(e["EventName"] for e in mine) == ["DeleteRepository", "DescribeRepositories"]
    assert all(e["Username"] == user for e in mine)


def test_unauthenticated_requests_are_not_recorded(berth, trail, name):
    repo = name()
    r = requests.post(berth.endpoint + "/", headers={
        "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DeleteRepository",
        "Content-Type": "application/x-amz-json-1.1",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ROOT_KEY_ID}/20260101/{REGION}/ecr/aws4_request, SignedHeaders=host, Signature=00",
    }, data=json.dumps({"repositoryName": repo}), timeout=10)
    assert r.status_code >= 400
    r = requests.get(f"{berth.endpoint}/v2/{repo}/tags/list", timeout=10)
    assert r.status_code == 401
    time.sleep(0.5)
    assert records(trail, repo) == []


# ---- /v2/ as ECR records it -------------------------------------------------


def test_a_v2_push_and_pull_are_the_events_ecr_records(berth, ecr, trail, name):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    v2 = V2(berth, ecr)
    digest, config, layer = v2.push(repo, os.urandom(3000), "git-abc123")
    push = records(trail, repo, wait_for=8)
    assert names(push) == ["CreateRepository",
                           "InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload",
                           "InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload",
                           "PutImage"]
    init, part, complete = push[4], push[5], push[6]
    upload_id = init["responseElements"]["uploadId"]
    assert part["requestParameters"]["uploadId"] == upload_id
    assert part["responseElements"]["lastByteReceived"] == 2999
    assert complete["requestParameters"]["layerDigests"] == [layer]
    assert complete["responseElements"]["layerDigest"] == layer
    put = push[7]
    assert put["requestParameters"] == {"registryId": ACCOUNT, "repositoryName": repo, "imageTag": "git-abc123"}
    assert put["responseElements"]["image"]["imageId"] == {"imageDigest": digest, "imageTag": "git-abc123"}
    assert put["userAgent"].startswith("docker/")
    assert all(r["readOnly"] is False for r in push)
    v2.pull(repo, "git-abc123")
    pull = records(trail, repo, wait_for=11)[8:]
    assert names(pull) == ["BatchGetImage", "GetDownloadUrlForLayer", "GetDownloadUrlForLayer"]
    assert pull[0]["requestParameters"]["imageIds"] == [{"imageTag": "git-abc123"}]
    assert OCI_MANIFEST in pull[0]["requestParameters"]["acceptedMediaTypes"]
    assert [p["requestParameters"]["layerDigest"] for p in pull[1:]] == [config, layer]
    assert all(p["readOnly"] for p in pull)
    # A manifest that fails is recorded with its OCI error code.
    r = requests.put(f"{berth.endpoint}/v2/{repo}/manifests/bad", data=b"{}", auth=v2.auth,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=10)
    assert r.status_code == 400
    bad = records(trail, repo, wait_for=12)[-1]
    assert bad["eventName"] == "PutImage" and bad["errorCode"] == "MANIFEST_INVALID"


def test_docker_login_push_and_pull(berth, ecr, trail, name, tmp_path):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    out = berth.aws("ecr", "get-login-password", "--region", REGION)
    assert out.returncode == 0, out.stderr
    cfg = tmp_path / "docker"
    env = dict(os.environ, DOCKER_CONFIG=str(cfg))

    def docker(*args, stdin=None):
        r = subprocess.run(["docker", *args], input=stdin, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"docker {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    docker("login", "--username", "AWS", "--password-stdin", berth.addr, stdin=out.stdout)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.bin").write_bytes(os.urandom(50_000))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY app.bin /app.bin\n")
    ref = f"{berth.addr}/{repo}:build-7"
    try:
        docker("build", "-q", "-t", ref, str(ctx))
        docker("push", ref)
        pushed = settled(trail, repo)
        assert "PutImage" in names(pushed)
        assert any(n == "CompleteLayerUpload" for n in names(pushed))
        put = [r for r in pushed if r["eventName"] == "PutImage"][-1]
        assert put["requestParameters"]["imageTag"] == "build-7"
        assert put["userAgent"].startswith("docker/")
        docker("rmi", "-f", ref)
        before = len(pushed)
        docker("pull", ref)
        pulled = settled(trail, repo)[before:]
        assert "BatchGetImage" in names(pulled) and "GetDownloadUrlForLayer" in names(pulled)
        assert not {"PutImage", "CompleteLayerUpload"} & set(names(pulled))
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], env=env, capture_output=True, timeout=60)
    logins = lookup(trail, "EventName", "GetAuthorizationToken")
    assert logins and json.loads(logins[0]["CloudTrailEvent"])["userAgent"].startswith("aws-cli/")
    # The token is never recorded.
    assert all("authorizationData" not in (json.loads(e["CloudTrailEvent"])["responseElements"] or {}) for e in logins)


# ---- other services ---------------------------------------------------------


def test_kms_sts_and_cloudformation_calls_are_recorded(berth, trail, name):
    kms = berth.client(service="kms")
    key = kms.create_key(Description="audit")["KeyMetadata"]["KeyId"]
    kms.encrypt(KeyId=key, Plaintext=b"secret-bytes")
    berth.client(service="sts").get_caller_identity()
    cfn = berth.client(service="cloudformation")
    stack = name()
    repo = name("stack-repo")
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps({"Resources": {"R": {
        "Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": repo}}}}))
    deadline = time.monotonic() + 60
    while cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] != "CREATE_COMPLETE":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(0.5)
    by_source = lambda s: [json.loads(e["CloudTrailEvent"]) for e in lookup(trail, "EventSource", s)]
    kms_events = by_source("kms.amazonaws.com")
    assert {"CreateKey", "Encrypt"} <= set(names(kms_events))
    enc = [e for e in kms_events if e["eventName"] == "Encrypt"][0]
    assert enc["readOnly"] is True and enc["requestParameters"]["KeyId"] == key
    assert "Plaintext" not in enc["requestParameters"] and enc["responseElements"] is None
    assert "GetCallerIdentity" in names(by_source("sts.amazonaws.com"))
    cfn_events = by_source("cloudformation.amazonaws.com")
    create = [e for e in cfn_events if e["eventName"] == "CreateStack"][0]
    assert create["requestParameters"]["StackName"] == stack
    assert "TemplateBody" not in create["requestParameters"]
    # The stack's repository was created by CloudFormation for the caller.
    made = records(trail, repo, wait_for=1)
    assert names(made)[0] == "CreateRepository"
    assert made[0]["userIdentity"]["invokedBy"] == "cloudformation.amazonaws.com"
    assert made[0]["userIdentity"]["arn"] == f"arn:aws:iam::{ACCOUNT}:root"


# ---- LookupEvents -----------------------------------------------------------


def test_lookup_events_filters_pages_and_refuses_bad_input(berth, ecr, trail, name):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    # Request times travel as whole seconds.
    time.sleep(1.1)
    start = time.time()
    for i in range(7):
        ecr.tag_resource(resourceArn=f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repo}",
                         tags=[{"Key": f"k{i}", "Value": "v"}])
    end = time.time() + 1
    # Paging with the aws CLI: 3 per page, all 8 events of the repository, newest first.
    out = berth.aws("cloudtrail", "lookup-events", "--region", REGION,
                    "--lookup-attributes", f"AttributeKey=ResourceName,AttributeValue={repo}",
                    "--page-size", "3")
    assert out.returncode == 0, out.stderr
    events = json.loads(out.stdout)["Events"]
    assert [e["EventName"] for e in events] == ["TagResource"] * 7 + ["CreateRepository"]
    times = [e["EventTime"] for e in events]
    assert times == sorted(times, reverse=True)
    assert events[0]["Resources"] == [{"ResourceType": "AWS::ECR::Repository", "ResourceName": repo}]
    assert events[0]["ReadOnly"] == "false" and events[0]["Username"] == "root"
    assert events[0]["AccessKeyId"] == ROOT_KEY_ID
    # boto3 pages by hand: MaxResults=2 gives 4 pages.
    pages, token = 0, None
    while True:
        args = {"LookupAttributes": [{"AttributeKey": "ResourceName", "AttributeValue": repo}], "MaxResults": 2}
        if token:
            args["NextToken"] = token
        page = trail.lookup_events(**args)
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert pages == 4
    # A time range.
    ranged = lookup(trail, "ResourceName", repo, StartTime=start, EndTime=end)
    assert [e["EventName"] for e in ranged] == ["TagResource"] * 7
    assert lookup(trail, "ResourceName", repo, EndTime=start - 3600) == []
    # The other attributes.
    for attribute, value, key in [("EventName", "TagResource", "EventName"), ("ReadOnly", "true", "ReadOnly"),
                                  ("AccessKeyId", ROOT_KEY_ID, "AccessKeyId")]:
        found = lookup(trail, attribute, value)
        assert found and all(e[key] == value for e in found), attribute
    assert lookup(trail, "ResourceType", "AWS::ECR::Repository")
    one = events[3]
    assert [e["EventId"] for e in lookup(trail, "EventId", one["EventId"])] == [one["EventId"]]
    # Bad input, in CloudTrail's words.
    with pytest.raises(trail.exceptions.InvalidLookupAttributesException):
        trail.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "a"},
                                              {"AttributeKey": "Username", "AttributeValue": "b"}])
    with pytest.raises(trail.exceptions.InvalidTimeRangeException):
        trail.lookup_events(StartTime=end, EndTime=start)
    with pytest.raises(trail.exceptions.InvalidNextTokenException):
        trail.lookup_events(NextToken="bm90LWEtdG9rZW4")
    raw = berth.client(service="cloudtrail", validate=False)
    with pytest.raises(raw.exceptions.InvalidMaxResultsException):
        raw.lookup_events(MaxResults=51)
    # A token is bound to the filter it was made for.
    first = trail.lookup_events(LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": repo}], MaxResults=2)
    with pytest.raises(trail.exceptions.InvalidNextTokenException):
        trail.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "TagResource"}],
                            NextToken=first["NextToken"])


def test_lookup_events_is_authorized_and_per_account(berth, ecr, name):
    _, _, denied = berth.user_with_policy({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}, service="cloudtrail")
    with pytest.raises(denied.exceptions.ClientError) as e:
        denied.lookup_events()
    assert "AccessDenied" in str(e.value) and "cloudtrail:LookupEvents" in str(e.value)
    _, _, allowed = berth.user_with_policy({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "cloudtrail:LookupEvents", "Resource": "*"}]}, service="cloudtrail")
    assert allowed.lookup_events(MaxResults=5)["Events"]
    # Another account's history holds none of this account's events.
    other = "444455556666"
    key = berth.iam("create-account", "--account-id", other)
    theirs = berth.client(key["AccessKeyId"], key["SecretAccessKey"], service="cloudtrail")
    theirs_ecr = berth.client(key["AccessKeyId"], key["SecretAccessKey"])
    theirs_ecr.describe_repositories()
    time.sleep(0.5)
    events = theirs.lookup_events(MaxResults=50)["Events"]
    assert events, "the other account's own call is in its history"
    assert all(json.loads(e["CloudTrailEvent"])["recipientAccountId"] == other for e in events)


def test_the_log_survives_repository_deletion(ecr, trail, name):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    upload_blob(ecr, repo, os.urandom(100))
    ecr.delete_repository(repositoryName=repo, force=True)
    recs = records(trail, repo, wait_for=5)
    assert names(recs)[0] == "CreateRepository" and names(recs)[-1] == "DeleteRepository"
    assert recs[-1]["requestParameters"] == {"repositoryName": repo, "force": True}


# ---- service events ---------------------------------------------------------


def test_lifecycle_expiry_is_the_services_event(berth, ecr, trail, name):
    repo = name()
    ecr.create_repository(repositoryName=repo)
    v2 = V2(berth, ecr)
    digests = [v2.push(repo, os.urandom(500), f"v{i}")[0] for i in range(3)]
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=json.dumps({"rules": [{
        "rulePriority": 1, "description": "keep one",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]}))
    out = berth.cli("lifecycle", "run", "--repository-name", repo)
    assert out, out
    expiry = [r for r in records(trail, repo, wait_for=1) if r["eventName"] == "PolicyExecutionEvent"]
    assert len(expiry) == 1
    e = expiry[0]
    assert e["eventType"] == "AwsServiceEvent"
    assert e["userIdentity"] == {"type": "AWSService", "accountId": ACCOUNT, "invokedBy": "ecr.amazonaws.com"}
    expired = {a["lifecycleEventImage"]["digest"] for a in e["additionalEventData"]["lifecycleEventImageActions"]}
    assert expired == set(digests[:2])
    assert all(a["actionType"] == "EXPIRE" for a in e["additionalEventData"]["lifecycleEventImageActions"])


def test_replication_writes_are_the_services_events(berth, ecr, name):
    """A push replicated to another account of this deployment: the
    destination's history holds the repository the replication service
    created and the image it wrote, as ReplicateImage."""
    other = "333344445555"
    key = berth.iam("create-account", "--account-id", other)
    dest = berth.client(key["AccessKeyId"], key["SecretAccessKey"])
    dest.put_registry_policy(policyText=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "ReplicationFrom", "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
        "Resource": f"arn:aws:ecr:*:{other}:repository/*"}]}))
    repo = f"replicated/{name()}"
    ecr.put_replication_configuration(replicationConfiguration={"rules": [{
        "destinations": [{"region": REGION, "registryId": other}],
        "repositoryFilters": [{"filter": "replicated/", "filterType": "PREFIX_MATCH"}]}]})
    try:
        ecr.create_repository(repositoryName=repo)
        digest, _, _ = V2(berth, ecr).push(repo, os.urandom(700), "r1")
        dest_trail = berth.client(key["AccessKeyId"], key["SecretAccessKey"], service="cloudtrail")
        recs = records(dest_trail, repo, wait_for=3)
        assert names(recs)[0] == "CreateRepository"
        assert recs[0]["userIdentity"] == {"type": "AWSService", "accountId": other,
                                           "invokedBy": "replication.ecr.amazonaws.com"}
        assert recs[0]["requestParameters"]["appliedFor"] == "REPLICATION"
        writes = [r for r in recs if r["eventName"] == "ReplicateImage"]
        assert {json.dumps(w["requestParameters"]["imageId"], sort_keys=True) for w in writes} >= {
            json.dumps({"imageDigest": digest, "imageTag": "r1"}, sort_keys=True)}
        assert all(w["requestParameters"]["sourceRegistryId"] == ACCOUNT for w in writes)
        assert all(w["recipientAccountId"] == other for w in recs)
    finally:
        ecr.put_replication_configuration(replicationConfiguration={"rules": []})


# ---- integrity: verify, export, stream, retention ----------------------------


def sql(server, statement):
    """Run one statement against the server's metadata database."""
    if scale_out():
        url = server.store_args[server.store_args.index("--database-url") + 1]
        out = subprocess.run(["psql", url, "-qAtc", statement], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout
    db = sqlite3.connect(Path(server.data_dir) / "metadata.db", timeout=30)
    try:
        cur = db.execute(statement)
        rows = cur.fetchall()
        db.commit()
        return "\n".join("|".join(str(c) for c in r) for r in rows)
    finally:
        db.close()


def verify(server):
    out = server.cli_run("audit", "verify")
    return out.returncode, json.loads(out.stdout)


@pytest.fixture
def isolated(tmp_path):
    server = Berth(tmp_path / "audit")
    try:
        yield server
    finally:
        server.stop()


def test_verify_catches_an_edited_a_deleted_and_a_truncated_event(isolated, name):
    ecr = isolated.client()
    for i in range(5):
        ecr.create_repository(repositoryName=f"{name()}-{i}")
    code, report = verify(isolated)
    assert code == 0 and report["ok"], report
    assert report["eventsChecked"] >= 5
    head = report["head"]["sequence"]
    # An edit of a record (hiding who did it).
    sql(isolated, "UPDATE audit_events SET record = REPLACE(record, 'Root', 'IAMUser') WHERE seq = 2")
    code, report = verify(isolated)
    assert code == 1 and not report["ok"]
    assert any("event 2 " in p and "altered" in p for p in report["problems"]), report
    # An edit of a column only (hiding it from LookupEvents).
    sql(isolated, "UPDATE audit_events SET record = REPLACE(record, 'IAMUser', 'Root') WHERE seq = 2")
    assert verify(isolated)[0] == 0
    sql(isolated, "UPDATE audit_events SET event_name = 'Nothing' WHERE seq = 3")
    code, report = verify(isolated)
    assert code == 1 and any("event 3 " in p and "eventName" in p for p in report["problems"]), report
    sql(isolated, "UPDATE audit_events SET event_name = 'CreateRepository' WHERE seq = 3")
    assert verify(isolated)[0] == 0
    # A deleted event in the middle, and the last one.
    sql(isolated, "DELETE FROM audit_events WHERE seq = 4")
    code, report = verify(isolated)
    assert code == 1 and "event 4 is missing" in report["problems"], report
    sql(isolated, f"DELETE FROM audit_events WHERE seq = {head}")
    code, report = verify(isolated)
    assert any("(the last)" in p for p in report["problems"]), report


def test_export_stream_and_retention(isolated, name, tmp_path):
    ecr = isolated.client()
    repo = name()
    ecr.create_repository(repositoryName=repo)
    upload_blob(ecr, repo, b"x" * 10)
    trail = isolated.client(service="cloudtrail")
    time.sleep(0.5)
    total = int(sql(isolated, "SELECT COUNT(*) FROM audit_events").strip())
    out = isolated.cli("audit", "export", "--out", str(tmp_path / "export"))
    assert out["events"] == total and out["files"] >= 1
    files = list((tmp_path / "export").rglob("*.json.gz"))
    assert len(files) == out["files"]
    day = time.strftime("%Y/%m/%d", time.gmtime())
    assert all(f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{day}/{ACCOUNT}_CloudTrail_{REGION}_" in str(f) for f in files)
    exported = [r for f in files for r in json.loads(gzip.decompress(f.read_bytes()))["Records"]]
    assert len(exported) == total
    assert {"CreateRepository", "InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload"} <= set(names(exported))
    # JSON lines: one record per line, from a time on.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    s = isolated.cli_run("audit", "stream", "--since", since)
    assert s.returncode == 0, s.stderr
    lines = [json.loads(l) for l in s.stdout.splitlines()]
    assert len(lines) == total and lines[0]["eventName"] == "CreateRepository"
    # Retention: 90 days from now, everything is past it; the chain still verifies.
    p = isolated.cli_run("audit", "prune", faketime="+91d")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["deleted"] == total
    code, report = verify(isolated)
    assert code == 0, report
    assert report["retainedFrom"] == total + 1
    ecr.describe_repositories()
    assert trail.lookup_events(MaxResults=50)["Events"] is not None
    code, report = verify(isolated)
    assert code == 0, report


def test_each_served_region_has_its_own_history(tmp_path, name):
    import boto3
    server = Berth(tmp_path / "regions", extra_args=["--region", "us-east-1", "--region", "eu-west-1"])
    try:
        def client(service, region):
            return boto3.session.Session().client(
                service, region_name=region, endpoint_url=server.endpoint,
                aws_access_key_id=ROOT_KEY_ID, aws_secret_access_key=server.env["BERTH_ROOT_SECRET_ACCESS_KEY"])
        repo = name()
        client("ecr", "eu-west-1").create_repository(repositoryName=repo)
        eu = lookup(client("cloudtrail", "eu-west-1"), "ResourceName", repo)
        assert [e["EventName"] for e in eu] == ["CreateRepository"]
        assert json.loads(eu[0]["CloudTrailEvent"])["awsRegion"] == "eu-west-1"
        assert json.loads(eu[0]["CloudTrailEvent"])["resources"][0]["ARN"] == \
            f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/{repo}"
        assert lookup(client("cloudtrail", "us-east-1"), "ResourceName", repo) == []
    finally:
        server.stop()


def test_audit_off_records_nothing(tmp_path, name):
    server = Berth(tmp_path / "off", extra_args=["--audit", "false"])
    try:
        ecr = server.client()
        ecr.create_repository(repositoryName=name())
        time.sleep(0.3)
        assert sql(server, "SELECT COUNT(*) FROM audit_events").strip() == "0"
        assert server.client(service="cloudtrail").lookup_events()["Events"] == []
    finally:
        server.stop()


def test_kill_9_during_pushes_loses_no_acknowledged_push(tmp_path, name):
    """Pushes run in parallel while the server is killed with SIGKILL: every
    manifest PUT that was answered 201 has its PutImage event after restart,
    and the chain verifies."""
    server = Berth(tmp_path / "kill")
    ecr = server.client()
    repo = name()
    ecr.create_repository(repositoryName=repo)
    v2 = V2(server, ecr)
    # Blobs first, then many manifests referring to them (tags differ).
    _, config, layer = v2.push(repo, os.urandom(1000), "base")
    config_size = len(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config_size, "digest": config},
        "layers": [{"mediaType": LAYER, "size": 1000, "digest": layer}],
        "annotations": {},
    })
    acknowledged = []
    lock = threading.Lock()
    stop = threading.Event()

    def pusher(w):
        i = 0
        session = requests.Session()
        while not stop.is_set():
            tag = f"w{w}-{i}"
            i += 1
            body = manifest.replace('"annotations": {}', f'"annotations": {{"n": "{tag}"}}')
            try:
                r = session.put(f"{v2.base}/v2/{repo}/manifests/{tag}", data=body, auth=v2.auth,
                                headers={"Content-Type": OCI_MANIFEST}, timeout=5)
            except requests.RequestException:
                continue
            if r.status_code == 201:
                with lock:
                    acknowledged.append((tag, r.headers["Docker-Content-Digest"]))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for w in range(4):
            pool.submit(pusher, w)
        deadline = time.monotonic() + 30
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        stop.set()
    server.stop()
    assert len(acknowledged) >= 40
    again = Berth(tmp_path / "kill-again", reuse=server)
    try:
        rows = sql(again, "SELECT record FROM audit_events WHERE event_name = 'PutImage'").splitlines()
        recorded = {(json.loads(r)["requestParameters"]["imageTag"], json.loads(r)["responseElements"]["image"]["imageId"]["imageDigest"])
                    for r in rows if "errorCode" not in json.loads(r)}
        missing = [a for a in acknowledged if a not in recorded]
        assert not missing, f"{len(missing)} acknowledged pushes have no event: {missing[:5]}"
        code, report = verify(again)
        assert code == 0, report
    finally:
        again.stop()

"""What the security review and moto's ECR tests found, through boto3, the
aws CLI and raw HTTP: no cross-account enumeration (authorize before lookup,
sealed page tokens, error messages that name nothing the caller may not see),
a catalog that hides denied repositories, every x-amz-* header signed, the
owner's root can always manage the policies that could lock it out, the
break-glass command, upload quotas, aws:SourceIp behind a trusted proxy,
bodies refused by size before they are read, and ECR's exact wire behaviour
(policy error texts, push-ordered image listings with tags in the order
they were applied, PutImage of an existing manifest without a tag).
"""

import base64
import json
import time

import hashlib

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, ROOT_KEY_ID, ROOT_SECRET, Berth
from test_ecr_api import (
    OCI_MANIFEST,
    TARGET,
    arn,
    assert_error_response,
    build_image,
    error,
    new_image,
    push_blobs,
    put,
    signed_post,
)

OTHER = "444444444444"


@pytest.fixture(scope="module")
def other(berth):
    """The root client of a second account, which has no rights in the first."""
    out = berth.iam("create-account", "--account-id", OTHER)
    return berth.client(out["AccessKeyId"], out["SecretAccessKey"])


def pages(call, key, **kwargs):
    """Every item under `key` of a paged operation, following nextToken."""
    items = []
    while True:
        r = call(**kwargs)
        items += r[key]
        if "nextToken" not in r:
            return items
        kwargs["nextToken"] = r["nextToken"]


def registry_token(client):
    data = client.get_authorization_token()["authorizationData"][0]
    return base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]


# ---- enumeration across accounts ---------------------------------------------------


def test_describe_repositories_of_another_account_names_nothing(berth, ecr, other, name):
    secret = name("secret-project")
    ecr.create_repository(repositoryName=secret)
    with pytest.raises(ClientError) as e:
        other.describe_repositories(registryId=ACCOUNT)
    code, message = error(e)
    assert code == "AccessDeniedException"
    assert secret not in message
    assert f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/*" in message
    # Paging cannot be used to walk the names either: tokens are sealed, and
    # one minted for the owner does not work for anyone else.
    for n in (name("a"), name("b")):
        ecr.create_repository(repositoryName=n)
    tok = ecr.describe_repositories(maxResults=1)["nextToken"]
    decoded = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    assert secret.encode() not in decoded and b"DescribeRepositories" not in decoded
    with pytest.raises(ClientError) as e:
        other.describe_repositories(registryId=ACCOUNT, nextToken=tok)
    assert error(e)[0] == "InvalidParameterException"
    # A token made up by hand (the old format: base64 of "<op>\n<name>").
    forged = base64.urlsafe_b64encode(f"DescribeRepositories\n{secret}".encode()).decode().rstrip("=")
    with pytest.raises(ClientError) as e:
        ecr.describe_repositories(nextToken=forged)
    assert error(e)[0] == "InvalidParameterException"


def test_existence_cannot_be_probed_from_another_account(ecr, other, name):
    real, missing = name("real"), name("missing")
    ecr.create_repository(repositoryName=real)
    calls = [
        lambda n: other.list_tags_for_resource(resourceArn=arn(n)),
        lambda n: other.tag_resource(resourceArn=arn(n), tags=[{"Key": "k", "Value": "v"}]),
        lambda n: other.untag_resource(resourceArn=arn(n), tagKeys=["k"]),
        lambda n: other.describe_repositories(registryId=ACCOUNT, repositoryNames=[n]),
        lambda n: other.describe_images(registryId=ACCOUNT, repositoryName=n),
        lambda n: other.get_repository_policy(registryId=ACCOUNT, repositoryName=n),
    ]
    for call in calls:
        answers = []
        for n in (real, missing):
            with pytest.raises(ClientError) as e:
                call(n)
            answers.append(error(e)[0])
        assert answers == ["AccessDeniedException", "AccessDeniedException"], answers


def test_a_user_denied_by_a_condition_is_told_access_denied(berth, name):
    """The lookup used to run before the check: a missing repository said
    RepositoryNotFound to a caller the policy would have refused anyway."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "ecr:*",
                "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            }
        ],
    }
    _, _, client = berth.user_with_policy(policy)
    for call in (
        lambda: client.describe_repositories(repositoryNames=[name("nope")]),
        lambda: client.list_tags_for_resource(resourceArn=arn(name("nope"))),
        lambda: client.list_images(repositoryName=name("nope")),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error(e)[0] == "AccessDeniedException"


def test_catalog_lists_only_what_the_caller_may_describe(berth, ecr, name):
    visible = sorted(name(f"visible{i}") for i in range(3))
    hidden = name("hidden")
    for n in visible + [hidden]:
        ecr.create_repository(repositoryName=n)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "ecr:DescribeRepositories", "Resource": arn(hidden)},
        ],
    }
    _, _, client = berth.user_with_policy(policy)
    token = registry_token(client)
    url = f"{berth.endpoint}/v2/_catalog"
    names = requests.get(url, auth=("AWS", token), timeout=10).json()["repositories"]
    assert hidden not in names
    assert set(visible) <= set(names)
    # Page by page, the hidden name is never a cursor either.
    seen, last = [], None
    while True:
        params = {"n": "1"} if last is None else {"n": "1", "last": last}
        r = requests.get(url, params=params, auth=("AWS", token), timeout=10)
        assert r.status_code == 200
        page = r.json()["repositories"]
        seen += page
        assert hidden not in r.headers.get("Link", "")
        if "Link" not in r.headers:
            break
        last = page[-1]
    assert hidden not in seen and set(visible) <= set(seen)


# ---- signatures ------------------------------------------------------------------------


def test_every_x_amz_header_must_be_signed(berth, name):
    """A captured request whose X-Amz-Target was not signed could be replayed
    as another operation (CreateRepository as DeleteRepository)."""
    body = json.dumps({"repositoryName": name()}).encode()
    req = AWSRequest(
        method="POST",
        url=berth.endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "ecr", REGION).add_auth(req)
    p = req.prepare()
    headers = dict(p.headers)
    headers["X-Amz-Target"] = TARGET + "CreateRepository"  # added after signing
    resp = requests.post(p.url, data=p.body, headers=headers, timeout=10)
    err = assert_error_response(resp, 400, "InvalidSignatureException")
    assert "x-amz-target" in err["message"].lower()


# ---- root, policies and break-glass ---------------------------------------------------------


def test_root_can_always_manage_a_repository_policy_that_denies_everyone(berth, ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    lockout = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "ecr:*"}],
        }
    )
    ecr.set_repository_policy(repositoryName=n, policyText=lockout)
    # Everything else is denied, to root too (AWS's rule, as for bucket policies) ...
    with pytest.raises(ClientError) as e:
        ecr.describe_images(repositoryName=n)
    assert error(e)[0] == "AccessDeniedException"
    # ... but the owner's root can still read, replace and delete the policy.
    assert ecr.get_repository_policy(repositoryName=n)["policyText"] == lockout
    ecr.set_repository_policy(repositoryName=n, policyText=lockout)
    ecr.delete_repository_policy(repositoryName=n)
    assert ecr.describe_images(repositoryName=n)["imageDetails"] == []


def test_break_glass_removes_a_registry_policy_that_denies_everyone(berth, ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    lockout = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "ecr:*", "Resource": "*"}],
        }
    )
    # A repository policy that even forbids its own management by anyone but root.
    ecr.set_repository_policy(repositoryName=n, policyText=lockout)
    out = berth.cli("break-glass", "delete-repository-policy", "--repository-name", n)
    assert out["repositoryName"] == n and out["deletedPolicyText"] == lockout
    start = time.monotonic()
    while True:  # the server's policy cache lives a few seconds
        try:
            ecr.describe_images(repositoryName=n)
            break
        except ClientError as err:
            assert err.response["Error"]["Code"] == "AccessDeniedException"
            assert time.monotonic() - start < 8, "break-glass change not picked up"
            time.sleep(0.25)
    ecr.put_registry_policy(policyText=lockout)
    out = berth.cli("break-glass", "delete-registry-policy")
    assert out["registryId"] == ACCOUNT and out["deletedPolicyText"] == lockout
    with pytest.raises(ClientError) as e:
        ecr.get_registry_policy()
    assert error(e)[0] == "RegistryPolicyNotFoundException"
    start = time.monotonic()
    while True:  # let the cached registry policy expire before other tests run
        try:
            ecr.describe_images(repositoryName=n)
            break
        except ClientError as err:
            assert err.response["Error"]["Code"] == "AccessDeniedException"
            assert time.monotonic() - start < 8
            time.sleep(0.25)


def test_policy_errors_in_ecr_words(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    for bad in ("not json", json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]})):
        with pytest.raises(ClientError) as e:
            ecr.set_repository_policy(repositoryName=n, policyText=bad)
        assert error(e) == (
            "InvalidParameterException",
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'",
        )
        with pytest.raises(ClientError) as e:
            ecr.put_registry_policy(policyText=bad)
        assert error(e) == (
            "InvalidParameterException",
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided'",
        )


# ---- bodies ---------------------------------------------------------------------------------


def test_request_bodies_are_capped_per_operation(berth, name):
    # A ListImages body of 300 KiB is no ListImages request.
    body = json.dumps({"repositoryName": name(), "pad": "x" * (300 << 10)}).encode()
    resp = signed_post(berth, "ListImages", body)
    err = assert_error_response(resp, 413, "RequestEntityTooLargeException")
    assert "ListImages" in err["message"]
    # An UploadLayerPart of 28 MiB would be; it is not refused for its size.
    resp = signed_post(berth, "UploadLayerPart", json.dumps({"repositoryName": name()}).encode())
    assert resp.status_code == 400 and resp.json()["__type"] != "RequestEntityTooLargeException"


# ---- iam commands -----------------------------------------------------------------------------


def test_iam_list_and_delete_access_keys_and_users(berth, ecr, name):
    user, _, client = berth.user_with_policy(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
    )
    keys = berth.iam("list-access-keys", "--account-id", ACCOUNT, "--user-name", user)["AccessKeyMetadata"]
    assert len(keys) == 1 and keys[0]["Status"] == "Active" and keys[0]["UserName"] == user
    key_id = keys[0]["AccessKeyId"]
    assert client.describe_repositories()["repositories"] is not None
    # A user with keys or policies cannot be deleted (IAM's DeleteConflict).
    out = berth.cli_run("iam", "delete-user", "--account-id", ACCOUNT, "--user-name", user)
    assert out.returncode != 0 and "DeleteConflict" in out.stderr
    berth.iam("delete-access-key", "--access-key-id", key_id)
    assert berth.iam("list-access-keys", "--account-id", ACCOUNT, "--user-name", user)["AccessKeyMetadata"] == []
    start = time.monotonic()
    while True:  # the key cache lives a few seconds
        try:
            client.describe_repositories()
        except ClientError as err:
            assert err.response["Error"]["Code"] == "UnrecognizedClientException"
            break
        assert time.monotonic() - start < 8, "deleted key still works"
        time.sleep(0.25)
    berth.iam("delete-user-policy", "--account-id", ACCOUNT, "--user-name", user, "--policy-name", "inline")
    assert berth.iam("delete-user", "--account-id", ACCOUNT, "--user-name", user)["Deleted"] is True
    users = berth.iam("list-users", "--account-id", ACCOUNT)["Users"]
    assert user not in [u["UserName"] for u in users]
    # The root's keys are listed without --user-name.
    root = berth.iam("list-access-keys", "--account-id", ACCOUNT)["AccessKeyMetadata"]
    assert ROOT_KEY_ID in [k["AccessKeyId"] for k in root]


# ---- ECR's wire behaviour (found by moto's suite) -----------------------------------------------


def test_images_are_listed_in_push_order_with_tags_in_the_order_applied(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    pushed = []
    for i in range(5):
        img = new_image(ecr, n, layer_sizes=(16,))
        put(ecr, n, img, tag=f"v{i}")
        pushed.append(img.digest)
        time.sleep(0.005)
    # Tags in the order they were applied, not alphabetically.
    img = new_image(ecr, n, layer_sizes=(16,))
    for t in ("zeta", "alpha", "mid"):
        put(ecr, n, img, tag=t)
        time.sleep(0.005)
    pushed.append(img.digest)
    details = ecr.describe_images(repositoryName=n)["imageDetails"]
    assert [d["imageDigest"] for d in details] == pushed
    assert details[-1]["imageTags"] == ["zeta", "alpha", "mid"]
    # Paging keeps that order.
    paged = pages(ecr.describe_images, "imageDetails", repositoryName=n, maxResults=2)
    assert [d["imageDigest"] for d in paged] == pushed
    ids = [
        (i["imageDigest"], i.get("imageTag"))
        for i in pages(ecr.list_images, "imageIds", repositoryName=n, maxResults=2)
    ]
    expected = [(d, f"v{i}") for i, d in enumerate(pushed[:5])] + [
        (pushed[5], t) for t in ("zeta", "alpha", "mid")
    ]
    assert ids == expected
    # A moved tag goes to the end of its new image's list.
    put(ecr, n, img, tag="v0")
    tags = ecr.describe_images(repositoryName=n, imageIds=[{"imageDigest": img.digest}])["imageDetails"][0]["imageTags"]
    assert tags == ["zeta", "alpha", "mid", "v0"]
    # A ListImages token does not work on another repository.
    m = name("other")
    ecr.create_repository(repositoryName=m)
    tok = ecr.list_images(repositoryName=n, maxResults=1)["nextToken"]
    with pytest.raises(ClientError) as e:
        ecr.list_images(repositoryName=m, nextToken=tok)
    assert error(e)[0] == "InvalidParameterException"


def test_put_image_again_without_a_tag_changes_nothing(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img = new_image(ecr, n, layer_sizes=(16,))
    put(ecr, n, img, tag="v1")
    r = put(ecr, n, img)
    assert r["image"]["imageId"] == {"imageDigest": img.digest}
    details = ecr.describe_images(repositoryName=n)["imageDetails"]
    assert len(details) == 1 and details[0]["imageTags"] == ["v1"]
    # With the tag it already has, ECR says so.
    with pytest.raises(ClientError) as e:
        put(ecr, n, img, tag="v1")
    assert error(e)[0] == "ImageAlreadyExistsException"


def test_put_image_checks_descriptor_sizes(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img, config, layers = build_image(layer_sizes=(40,), media_type=OCI_MANIFEST)
    push_blobs(ecr, n, config, layers)
    wrong = json.loads(img.manifest)
    wrong["layers"][0]["size"] += 1
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=n, imageManifest=json.dumps(wrong), imageTag="bad")
    code, message = error(e)
    assert code == "InvalidParameterException"
    assert img.layer_digests[0] in message
    assert ecr.describe_images(repositoryName=n)["imageDetails"] == []


# ---- quotas and proxies: a server of their own ----------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    server = Berth(
        tmp_path_factory.mktemp("limited"),
        extra_args=[
            "--max-uploads-per-caller", "3",
            "--max-uploads-per-repository", "4",
            "--trusted-proxy", "127.0.0.1",
        ],
    )
    try:
        yield server
    finally:
        server.stop()


def test_upload_sessions_are_limited_per_caller_and_repository(limited, name):
    ecr = limited.client()
    n, m = name(), name("second")
    for r in (n, m):
        ecr.create_repository(repositoryName=r)
    ids = [ecr.initiate_layer_upload(repositoryName=n)["uploadId"] for _ in range(3)]
    with pytest.raises(ClientError) as e:
        ecr.initiate_layer_upload(repositoryName=m)
    assert error(e)[0] == "LimitExceededException"
    # On /v2/ the same quota answers 429 TOOMANYREQUESTS.
    token = registry_token(ecr)
    r = requests.post(f"{limited.endpoint}/v2/{n}/blobs/uploads/", auth=("AWS", token), timeout=10)
    assert r.status_code == 429, r.text
    assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    # Another caller has a quota of its own, until the repository's fills.
    _, _, user = limited.user_with_policy(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
    )
    user.initiate_layer_upload(repositoryName=n)
    with pytest.raises(ClientError) as e:
        user.initiate_layer_upload(repositoryName=n)
    assert error(e)[0] == "LimitExceededException"
    assert "repository" in error(e)[1]
    # A finished upload frees its slot.
    data = b"x" * 100
    ecr.upload_layer_part(repositoryName=n, uploadId=ids[0], partFirstByte=0, partLastByte=99, layerPartBlob=data)
    ecr.complete_layer_upload(
        repositoryName=n, uploadId=ids[0], layerDigests=["sha256:" + hashlib.sha256(data).hexdigest()]
    )
    ecr.initiate_layer_upload(repositoryName=m)


def test_source_ip_behind_a_trusted_proxy(limited, name):
    """Behind a reverse proxy, aws:SourceIp was the proxy's address. With
    --trusted-proxy, it is the right-most untrusted X-Forwarded-For hop."""
    n = name()
    root = limited.client()
    root.create_repository(repositoryName=n)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "ecr:DescribeRepositories",
                "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
            }
        ],
    }
    _, _, client = limited.user_with_policy(policy)

    def via(forwarded_for, forwarded=None):
        def add(request, **kwargs):
            if forwarded_for is not None:
                request.headers["X-Forwarded-For"] = forwarded_for
            if forwarded is not None:
                request.headers["Forwarded"] = forwarded

        client.meta.events.register("before-send.ecr.DescribeRepositories", add)
        try:
            return client.describe_repositories(repositoryNames=[n])
        finally:
            client.meta.events.unregister("before-send.ecr.DescribeRepositories", add)

    assert via("203.0.113.7")["repositories"][0]["repositoryName"] == n
    # The client cannot spoof by putting an address in front of its own.
    for hops in (None, "198.51.100.1", "203.0.113.7, 198.51.100.1"):
        with pytest.raises(ClientError) as e:
            via(hops)
        assert error(e)[0] == "AccessDeniedException", hops
    # Nor with a `Forwarded` header of its own: proxies that append to
    # X-Forwarded-For pass it through, so only X-Forwarded-For is read.
    for hops in (None, "198.51.100.1"):
        with pytest.raises(ClientError) as e:
            via(hops, forwarded="for=203.0.113.7")
        assert error(e)[0] == "AccessDeniedException", hops

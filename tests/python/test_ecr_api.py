"""Berth's ECR API driven by the real clients: boto3/botocore (wire truth is
botocore's service model) and the aws CLI v1. Expected codes and messages come
from /work/shared/docs/ecr-api.md (sections 1, 2.1-2.5, 3, 5.1, 5.2, 5.4).

One server per module (see conftest.py); every test uses its own repositories.
"""

import base64
import datetime
import hashlib
import json
import re
import os
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from unittest import mock

import boto3
import botocore.auth
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, ROOT_KEY_ID, ROOT_SECRET

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TARGET = "AmazonEC2ContainerRegistry_V20150921."
SECOND_ACCOUNT = "222222222222"
PAGING_ACCOUNT = "333333333333"


# ---- helpers -----------------------------------------------------------------


def sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def error(excinfo):
    """(code, message) of a botocore ClientError."""
    e = excinfo.value.response["Error"]
    return e["Code"], e["Message"]


def arn(repo, account=ACCOUNT):
    return f"arn:aws:ecr:{REGION}:{account}:repository/{repo}"


def not_found_msg(repo, account=ACCOUNT):
    return f"The repository with name '{repo}' does not exist in the registry with id '{account}'"


def constraint_msg(member, detail):
    return f"Invalid parameter at '{member}' failed to satisfy constraint: '{detail}'"


def upload_blob(ecr, repo, data: bytes, parts=1, **kw):
    """Push a blob through Initiate/UploadLayerPart/Complete, in `parts` parts."""
    up = ecr.initiate_layer_upload(repositoryName=repo, **kw)
    uid = up["uploadId"]
    step = -(-len(data) // parts)
    first = 0
    while first < len(data):
        chunk = data[first : first + step]
        r = ecr.upload_layer_part(
            repositoryName=repo,
            uploadId=uid,
            partFirstByte=first,
            partLastByte=first + len(chunk) - 1,
            layerPartBlob=chunk,
            **kw,
        )
        assert r["lastByteReceived"] == first + len(chunk) - 1
        assert r["uploadId"] == uid
        first += len(chunk)
    r = ecr.complete_layer_upload(repositoryName=repo, uploadId=uid, layerDigests=[sha256(data)], **kw)
    assert r["layerDigest"] == sha256(data)
    return sha256(data)


@dataclass
class Image:
    manifest: str
    digest: str
    layer_bytes: int
    config_digest: str
    layer_digests: list


def build_image(layer_sizes=(1500, 700), media_type=DOCKER_V2, with_media_type=True):
    """Blobs and a manifest (deliberately not in canonical JSON form)."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"nonce": uuid.uuid4().hex}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    layers = [os.urandom(n) for n in layer_sizes]
    oci = media_type == OCI_MANIFEST
    manifest = {"schemaVersion": 2}
    if with_media_type:
        manifest["mediaType"] = media_type
    manifest["config"] = {
        "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
        "size": len(config),
        "digest": sha256(config),
    }
    manifest["layers"] = [
        {"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "size": len(l), "digest": sha256(l)}
        for l in layers
    ]
    text = json.dumps(manifest, indent=3)
    img = Image(text, sha256(text.encode()), sum(layer_sizes), sha256(config), [sha256(l) for l in layers])
    return img, config, layers


def push_blobs(ecr, repo, config, layers, **kw):
    upload_blob(ecr, repo, config, **kw)
    for l in layers:
        upload_blob(ecr, repo, l, **kw)


def new_image(ecr, repo, layer_sizes=(1500, 700), **kw):
    """Upload the blobs of a fresh image into `repo`; return the Image (not yet put)."""
    img, config, layers = build_image(layer_sizes)
    push_blobs(ecr, repo, config, layers, **kw)
    return img


def put(ecr, repo, img, tag=None, **kw):
    args = dict(repositoryName=repo, imageManifest=img.manifest, **kw)
    if tag is not None:
        args["imageTag"] = tag
    return ecr.put_image(**args)


def signed_post(berth, target, body: bytes, key=ROOT_KEY_ID, secret=ROOT_SECRET, shift=None):
    """A SigV4-signed `POST /` sent with requests; `shift` moves the signing clock."""
    req = AWSRequest(
        method="POST",
        url=berth.endpoint + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": TARGET + target,
        },
    )
    signer = SigV4Auth(Credentials(key, secret), "ecr", REGION)
    if shift is None:
        signer.add_auth(req)
    else:
        real = botocore.auth.get_current_datetime
        with mock.patch.object(
            botocore.auth, "get_current_datetime", side_effect=lambda *a, **k: real(*a, **k) + shift
        ):
            signer.add_auth(req)
    p = req.prepare()
    return requests.post(p.url, data=p.body, headers=dict(p.headers), timeout=30)


def assert_error_response(resp, status, code):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["__type"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert resp.headers.get("x-amzn-ErrorType") == code
    assert resp.headers.get("x-amzn-RequestId")
    return body


def assert_recent(ts, seconds=120):
    assert isinstance(ts, datetime.datetime)
    assert ts.tzinfo is not None
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - ts).total_seconds()) < seconds, (ts, now)


# ---- CreateRepository ----------------------------------------------------------


def test_create_repository_defaults_and_shape(berth, ecr, name):
    n = name()
    resp = ecr.create_repository(repositoryName=n)
    repo = resp["repository"]
    assert set(repo) == {
        "repositoryArn",
        "registryId",
        "repositoryName",
        "repositoryUri",
        "createdAt",
        "imageTagMutability",
        "imageScanningConfiguration",
        "encryptionConfiguration",
    }
    assert repo["repositoryArn"] == arn(n)
    assert repo["registryId"] == ACCOUNT
    assert repo["repositoryName"] == n
    assert repo["repositoryUri"] == f"{berth.addr}/{n}"
    assert_recent(repo["createdAt"])
    assert repo["imageTagMutability"] == "MUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": False}
    assert repo["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert ecr.list_tags_for_resource(resourceArn=arn(n))["tags"] == []
    # Describe shows the same repository.
    described = ecr.describe_repositories(repositoryNames=[n])["repositories"]
    assert described == [repo]


def test_create_repository_with_tags_scan_and_namespace(ecr, name):
    n = f"team/{name()}"
    tags = [{"Key": "team", "Value": "core"}, {"Key": "env", "Value": ""}]
    repo = ecr.create_repository(
        repositoryName=n, tags=tags, imageScanningConfiguration={"scanOnPush": True}
    )["repository"]
    assert repo["repositoryName"] == n
    assert repo["repositoryArn"] == arn(n)
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    got = ecr.list_tags_for_resource(resourceArn=arn(n))["tags"]
    assert sorted(got, key=lambda t: t["Key"]) == sorted(tags, key=lambda t: t["Key"])


@pytest.mark.parametrize("mutability", ["MUTABLE", "IMMUTABLE"])
def test_create_repository_mutability(ecr, name, mutability):
    n = name()
    repo = ecr.create_repository(repositoryName=n, imageTagMutability=mutability)["repository"]
    assert repo["imageTagMutability"] == mutability
    assert "imageTagMutabilityExclusionFilters" not in repo
    d = ecr.describe_repositories(repositoryNames=[n])["repositories"][0]
    assert d["imageTagMutability"] == mutability


@pytest.mark.parametrize("mutability", ["MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION"])
def test_create_repository_mutability_with_exclusions(ecr, name, mutability):
    n = name()
    filters = [
        {"filterType": "WILDCARD", "filter": "latest"},
        {"filterType": "WILDCARD", "filter": "dev-*"},
    ]
    repo = ecr.create_repository(
        repositoryName=n, imageTagMutability=mutability, imageTagMutabilityExclusionFilters=filters
    )["repository"]
    assert repo["imageTagMutability"] == mutability
    assert repo["imageTagMutabilityExclusionFilters"] == filters
    d = ecr.describe_repositories(repositoryNames=[n])["repositories"][0]
    assert d["imageTagMutability"] == mutability
    assert d["imageTagMutabilityExclusionFilters"] == filters


def test_create_repository_encryption(berth, ecr, name):
    a, k, k2 = name("aes"), name("kms"), name("kmsdefault")
    r = ecr.create_repository(
        repositoryName=a, encryptionConfiguration={"encryptionType": "AES256"}
    )["repository"]
    assert r["encryptionConfiguration"] == {"encryptionType": "AES256"}
    # A key of the KMS service on the same endpoint (tests/python/test_kms.py).
    kms = boto3.session.Session().client(
        "kms", region_name=REGION, endpoint_url=berth.endpoint,
        aws_access_key_id=ROOT_KEY_ID, aws_secret_access_key=ROOT_SECRET,
    )
    key = kms.create_key()["KeyMetadata"]["Arn"]
    r = ecr.create_repository(
        repositoryName=k, encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key}
    )["repository"]
    assert r["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}
    d = ecr.describe_repositories(repositoryNames=[k])["repositories"][0]
    assert d["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}
    # Without a key, ECR uses the account's AWS-managed key and names it.
    r = ecr.create_repository(
        repositoryName=k2, encryptionConfiguration={"encryptionType": "KMS"}
    )["repository"]
    managed = r["encryptionConfiguration"]["kmsKey"]
    assert r["encryptionConfiguration"]["encryptionType"] == "KMS"
    assert re.fullmatch(r"arn:aws:kms:us-east-1:123456789012:key/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", managed), managed
    d = ecr.describe_repositories(repositoryNames=[k2])["repositories"][0]
    assert d["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": managed}


def test_create_repository_already_exists(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    with pytest.raises(ClientError) as e:
        ecr.create_repository(repositoryName=n)
    assert error(e) == (
        "RepositoryAlreadyExistsException",
        f"The repository with name '{n}' already exists in the registry with id '{ACCOUNT}'",
    )
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


NAME_REGEX = "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("Upper-Case", constraint_msg("repositoryName", f"must satisfy regular expression '{NAME_REGEX}'")),
        ("bad//name", constraint_msg("repositoryName", f"must satisfy regular expression '{NAME_REGEX}'")),
        ("-leading", constraint_msg("repositoryName", f"must satisfy regular expression '{NAME_REGEX}'")),
        ("a", constraint_msg("repositoryName", "must have length greater than or equal to 2")),
        ("a" * 257, constraint_msg("repositoryName", "must have length less than or equal to 256")),
    ],
    ids=["upper", "double-slash", "leading-dash", "1-char", "257-chars"],
)
def test_create_repository_bad_name(ecr_raw, bad, message):
    with pytest.raises(ClientError) as e:
        ecr_raw.create_repository(repositoryName=bad)
    assert error(e) == ("InvalidParameterException", message)


def test_create_repository_name_of_256_chars_is_fine(ecr, name):
    n = (name() + "-" + "a" * 256)[:256]
    assert ecr.create_repository(repositoryName=n)["repository"]["repositoryName"] == n


@pytest.mark.parametrize(
    "kwargs",
    [
        {"imageTagMutability": "SOMETIMES"},
        {
            "imageTagMutability": "MUTABLE",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "x*"}],
        },
        {
            "imageTagMutability": "IMMUTABLE",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "x*"}],
        },
        {"imageTagMutability": "MUTABLE_WITH_EXCLUSION"},
        {"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"},
        {
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "bad filter"}],
        },
        {
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": f"f{i}"} for i in range(6)],
        },
        {"encryptionConfiguration": {"encryptionType": "AES256", "kmsKey": "alias/mine"}},
        {"encryptionConfiguration": {"encryptionType": "ROT13"}},
    ],
    ids=[
        "bad-enum",
        "mutable-with-filters",
        "immutable-with-filters",
        "mutable-excl-without-filters",
        "immutable-excl-without-filters",
        "bad-filter",
        "six-filters",
        "aes-with-kms-key",
        "bad-encryption-type",
    ],
)
def test_create_repository_invalid_parameters(ecr_raw, name, kwargs):
    n = name()
    with pytest.raises(ClientError) as e:
        ecr_raw.create_repository(repositoryName=n, **kwargs)
    code, message = error(e)
    assert code == "InvalidParameterException", message
    assert message
    # Nothing was created.
    with pytest.raises(ClientError) as e:
        ecr_raw.describe_repositories(repositoryNames=[n])
    assert error(e)[0] == "RepositoryNotFoundException"


def test_create_repository_reserved_tag_key(ecr, name):
    n = name()
    with pytest.raises(ClientError) as e:
        ecr.create_repository(repositoryName=n, tags=[{"Key": "aws:owner", "Value": "me"}])
    assert error(e)[0] == "InvalidTagParameterException"
    with pytest.raises(ClientError) as e:
        ecr.describe_repositories(repositoryNames=[n])
    assert error(e)[0] == "RepositoryNotFoundException"


def test_create_repository_too_many_tags(ecr, name):
    n = name()
    with pytest.raises(ClientError) as e:
        ecr.create_repository(
            repositoryName=n, tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)]
        )
    assert error(e)[0] == "TooManyTagsException"


# ---- DescribeRepositories --------------------------------------------------------


def test_describe_repositories_by_name(ecr, name):
    a, b = name("a"), name("b")
    ecr.create_repository(repositoryName=a)
    ecr.create_repository(repositoryName=b)
    got = ecr.describe_repositories(repositoryNames=[b, a])["repositories"]
    assert sorted(r["repositoryName"] for r in got) == sorted([a, b])
    assert "nextToken" not in ecr.describe_repositories(repositoryNames=[a])


def test_describe_repositories_names_exclude_paging(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    for kwargs in ({"maxResults": 5}, {"nextToken": "x"}):
        with pytest.raises(ClientError) as e:
            ecr.describe_repositories(repositoryNames=[n], **kwargs)
        assert error(e)[0] == "InvalidParameterException", kwargs


def test_describe_repositories_any_missing_fails(ecr, name):
    a, missing = name("a"), name("missing")
    ecr.create_repository(repositoryName=a)
    with pytest.raises(ClientError) as e:
        ecr.describe_repositories(repositoryNames=[a, missing])
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(missing))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.fixture(scope="module")
def paging_account(berth):
    """A separate account holding exactly five repositories."""
    out = berth.iam("create-account", "--account-id", PAGING_ACCOUNT, "--name", "paging")
    assert out["AccountId"] == PAGING_ACCOUNT
    client = berth.client(out["AccessKeyId"], out["SecretAccessKey"])
    names = [f"page-repo-{i}" for i in range(5)]
    for n in names:
        assert client.create_repository(repositoryName=n)["repository"]["registryId"] == PAGING_ACCOUNT
    return client, names


def test_describe_repositories_pagination_manual(paging_account):
    client, names = paging_account
    seen, tokens, pages = [], [], []
    kwargs = {"maxResults": 2}
    while True:
        resp = client.describe_repositories(**kwargs)
        page = [r["repositoryName"] for r in resp["repositories"]]
        pages.append(len(page))
        seen += page
        tok = resp.get("nextToken")
        if not tok:
            break
        assert tok not in tokens, "nextToken must advance"
        tokens.append(tok)
        kwargs["nextToken"] = tok
    assert pages == [2, 2, 1]
    assert len(tokens) == 2
    assert sorted(seen) == sorted(names)
    assert len(set(seen)) == 5
    # Without maxResults everything fits in one page.
    resp = client.describe_repositories()
    assert sorted(r["repositoryName"] for r in resp["repositories"]) == sorted(names)
    assert "nextToken" not in resp


def test_describe_repositories_paginator(paging_account):
    client, names = paging_account
    pages = list(
        client.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 2})
    )
    assert [len(p["repositories"]) for p in pages] == [2, 2, 1]
    seen = [r["repositoryName"] for p in pages for r in p["repositories"]]
    assert sorted(seen) == sorted(names)
    # MaxItems with resumption across the paginator's own token.
    first = client.get_paginator("describe_repositories").paginate(
        PaginationConfig={"PageSize": 2, "MaxItems": 3}
    ).build_full_result()
    assert len(first["repositories"]) == 3
    rest = client.get_paginator("describe_repositories").paginate(
        PaginationConfig={"PageSize": 2, "StartingToken": first["NextToken"]}
    ).build_full_result()
    assert sorted(r["repositoryName"] for r in first["repositories"] + rest["repositories"]) == sorted(names)


@pytest.mark.parametrize("kwargs", [{"nextToken": "garbage!!"}, {"nextToken": "Z2FyYmFnZQ"}, {"maxResults": 0}, {"maxResults": 1001}])
def test_describe_repositories_bad_paging(ecr_raw, kwargs):
    with pytest.raises(ClientError) as e:
        ecr_raw.describe_repositories(**kwargs)
    code, message = error(e)
    assert code == "InvalidParameterException"
    member = next(iter(kwargs))
    assert message.startswith(f"Invalid parameter at '{member}' failed to satisfy constraint: '"), message


def test_describe_repositories_token_of_another_operation(ecr, name):
    """A ListImages token is not a DescribeRepositories token."""
    n = name()
    ecr.create_repository(repositoryName=n)
    img = new_image(ecr, n, layer_sizes=(10,))
    put(ecr, n, img, tag="a")
    put(ecr, n, img, tag="b")
    tok = ecr.list_images(repositoryName=n, maxResults=1)["nextToken"]
    with pytest.raises(ClientError) as e:
        ecr.describe_repositories(nextToken=tok)
    assert error(e)[0] == "InvalidParameterException"


# ---- DeleteRepository ---------------------------------------------------------


def test_delete_repository_empty(ecr, name):
    n = name()
    created = ecr.create_repository(repositoryName=n)["repository"]
    deleted = ecr.delete_repository(repositoryName=n)["repository"]
    assert deleted["repositoryName"] == n
    assert deleted["repositoryArn"] == created["repositoryArn"]
    assert deleted["registryId"] == ACCOUNT
    with pytest.raises(ClientError) as e:
        ecr.delete_repository(repositoryName=n)
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(n))


def test_delete_repository_not_empty_then_force(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n, tags=[{"Key": "k", "Value": "v"}])
    ecr.set_repository_policy(
        repositoryName=n,
        policyText=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"}, "Action": "ecr:BatchGetImage"}],
            }
        ),
    )
    img = new_image(ecr, n)
    put(ecr, n, img, tag="v1")
    with pytest.raises(ClientError) as e:
        ecr.delete_repository(repositoryName=n)
    assert error(e) == (
        "RepositoryNotEmptyException",
        f"The repository with name '{n}' in registry with id '{ACCOUNT}' cannot be deleted because it still contains images",
    )
    with pytest.raises(ClientError) as e:
        ecr.delete_repository(repositoryName=n, force=False)
    assert error(e)[0] == "RepositoryNotEmptyException"
    deleted = ecr.delete_repository(repositoryName=n, force=True)["repository"]
    assert deleted["repositoryName"] == n
    for call in (
        lambda: ecr.describe_repositories(repositoryNames=[n]),
        lambda: ecr.describe_images(repositoryName=n),
        lambda: ecr.list_images(repositoryName=n),
        lambda: ecr.delete_repository(repositoryName=n, force=True),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error(e) == ("RepositoryNotFoundException", not_found_msg(n))
    # The name can be used again, and the new repository is empty, untagged, without policy.
    ecr.create_repository(repositoryName=n)
    assert ecr.list_images(repositoryName=n)["imageIds"] == []
    assert ecr.list_tags_for_resource(resourceArn=arn(n))["tags"] == []
    with pytest.raises(ClientError) as e:
        ecr.get_repository_policy(repositoryName=n)
    assert error(e)[0] == "RepositoryPolicyNotFoundException"


# ---- resource tags -----------------------------------------------------------------


def test_tag_untag_list(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n, tags=[{"Key": "a", "Value": "1"}])
    assert ecr.tag_resource(resourceArn=arn(n), tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "9"}])[
        "ResponseMetadata"
    ]["HTTPStatusCode"] == 200
    tags = ecr.list_tags_for_resource(resourceArn=arn(n))["tags"]
    assert sorted(tags, key=lambda t: t["Key"]) == [{"Key": "a", "Value": "9"}, {"Key": "b", "Value": "2"}]
    ecr.untag_resource(resourceArn=arn(n), tagKeys=["a", "not-there"])
    assert ecr.list_tags_for_resource(resourceArn=arn(n))["tags"] == [{"Key": "b", "Value": "2"}]


@pytest.mark.parametrize(
    "bad_arn",
    [
        "not-an-arn",
        "arn:aws:ecr:us-east-1:123456789012:cluster/x",
        "arn:aws:s3:::bucket",
        "arn:aws:ecr:us-east-1:12345:repository/abc",
    ],
)
def test_tags_bad_arn(ecr, bad_arn):
    expected = ("InvalidParameterException", constraint_msg("resourceArn", "Invalid ARN"))
    with pytest.raises(ClientError) as e:
        ecr.list_tags_for_resource(resourceArn=bad_arn)
    assert error(e) == expected
    with pytest.raises(ClientError) as e:
        ecr.tag_resource(resourceArn=bad_arn, tags=[{"Key": "k", "Value": "v"}])
    assert error(e) == expected
    with pytest.raises(ClientError) as e:
        ecr.untag_resource(resourceArn=bad_arn, tagKeys=["k"])
    assert error(e) == expected


def test_tags_missing_repository(ecr, name):
    n = name()
    with pytest.raises(ClientError) as e:
        ecr.list_tags_for_resource(resourceArn=arn(n))
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(n))
    with pytest.raises(ClientError) as e:
        ecr.tag_resource(resourceArn=arn(n), tags=[{"Key": "k", "Value": "v"}])
    assert error(e)[0] == "RepositoryNotFoundException"


def test_tags_limits(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    with pytest.raises(ClientError) as e:
        ecr.tag_resource(resourceArn=arn(n), tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    assert error(e)[0] == "TooManyTagsException"
    assert ecr.list_tags_for_resource(resourceArn=arn(n))["tags"] == []
    ecr.tag_resource(resourceArn=arn(n), tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    assert len(ecr.list_tags_for_resource(resourceArn=arn(n))["tags"]) == 50
    # Overwriting an existing key is not a new tag.
    ecr.tag_resource(resourceArn=arn(n), tags=[{"Key": "k0", "Value": "w"}])
    with pytest.raises(ClientError) as e:
        ecr.tag_resource(resourceArn=arn(n), tags=[{"Key": "one-too-many", "Value": "v"}])
    assert error(e)[0] == "TooManyTagsException"
    with pytest.raises(ClientError) as e:
        ecr.tag_resource(resourceArn=arn(n), tags=[{"Key": "aws:reserved", "Value": "v"}])
    assert error(e)[0] == "InvalidTagParameterException"


# ---- PutImageTagMutability, DescribeRegistry ------------------------------------------


def test_put_image_tag_mutability(ecr, ecr_raw, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    resp = ecr.put_image_tag_mutability(repositoryName=n, imageTagMutability="IMMUTABLE")
    assert {k: v for k, v in resp.items() if k != "ResponseMetadata"} == {
        "registryId": ACCOUNT,
        "repositoryName": n,
        "imageTagMutability": "IMMUTABLE",
    }
    assert ecr.describe_repositories(repositoryNames=[n])["repositories"][0]["imageTagMutability"] == "IMMUTABLE"
    filters = [{"filterType": "WILDCARD", "filter": "latest"}]
    resp = ecr.put_image_tag_mutability(
        repositoryName=n, imageTagMutability="IMMUTABLE_WITH_EXCLUSION", imageTagMutabilityExclusionFilters=filters
    )
    assert resp["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert resp["imageTagMutabilityExclusionFilters"] == filters
    d = ecr.describe_repositories(repositoryNames=[n])["repositories"][0]
    assert d["imageTagMutabilityExclusionFilters"] == filters
    # Back to MUTABLE clears the filters.
    resp = ecr.put_image_tag_mutability(repositoryName=n, imageTagMutability="MUTABLE")
    assert "imageTagMutabilityExclusionFilters" not in resp
    d = ecr.describe_repositories(repositoryNames=[n])["repositories"][0]
    assert d["imageTagMutability"] == "MUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in d
    with pytest.raises(ClientError) as e:
        ecr_raw.put_image_tag_mutability(repositoryName=n, imageTagMutability="NEVER")
    assert error(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecr.put_image_tag_mutability(repositoryName=n, imageTagMutability="MUTABLE_WITH_EXCLUSION")
    assert error(e)[0] == "InvalidParameterException"
    missing = name("missing")
    with pytest.raises(ClientError) as e:
        ecr.put_image_tag_mutability(repositoryName=missing, imageTagMutability="MUTABLE")
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(missing))


def test_describe_registry(ecr):
    resp = ecr.describe_registry()
    assert resp["registryId"] == ACCOUNT
    assert resp["replicationConfiguration"] == {"rules": []}


# ---- layer upload through the API ---------------------------------------------------


def test_push_through_layer_api(berth, ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img, config, layers = build_image(layer_sizes=(5000, 3001))
    digests = [img.config_digest] + img.layer_digests

    before = ecr.batch_check_layer_availability(repositoryName=n, layerDigests=digests)
    assert before["layers"] == []
    assert [f["layerDigest"] for f in before["failures"]] == digests
    assert {f["failureCode"] for f in before["failures"]} == {"MissingLayerDigest"}

    init = ecr.initiate_layer_upload(repositoryName=n)
    assert init["partSize"] == 10485760
    uid = init["uploadId"]
    assert len(uid) == 36 and str(uuid.UUID(uid)) == uid.lower()
    ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=len(config) - 1, layerPartBlob=config)
    assert ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[img.config_digest])[
        "layerDigest"
    ] == img.config_digest

    for layer in layers:
        uid = ecr.initiate_layer_upload(repositoryName=n)["uploadId"]
        half = len(layer) // 2
        r1 = ecr.upload_layer_part(
            repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=half - 1, layerPartBlob=layer[:half]
        )
        assert {k: v for k, v in r1.items() if k != "ResponseMetadata"} == {
            "registryId": ACCOUNT,
            "repositoryName": n,
            "uploadId": uid,
            "lastByteReceived": half - 1,
        }
        r2 = ecr.upload_layer_part(
            repositoryName=n,
            uploadId=uid,
            partFirstByte=half,
            partLastByte=len(layer) - 1,
            layerPartBlob=layer[half:],
        )
        assert r2["lastByteReceived"] == len(layer) - 1
        done = ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[sha256(layer)])
        assert {k: v for k, v in done.items() if k != "ResponseMetadata"} == {
            "registryId": ACCOUNT,
            "repositoryName": n,
            "uploadId": uid,
            "layerDigest": sha256(layer),
        }

    after = ecr.batch_check_layer_availability(repositoryName=n, layerDigests=digests)
    assert after["failures"] == []
    assert [l["layerDigest"] for l in after["layers"]] == digests
    assert {l["layerAvailability"] for l in after["layers"]} == {"AVAILABLE"}
    assert [l["layerSize"] for l in after["layers"]] == [len(config)] + [len(l) for l in layers]

    # A second upload of the same content is refused.
    uid = ecr.initiate_layer_upload(repositoryName=n)["uploadId"]
    ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=len(layers[0]) - 1, layerPartBlob=layers[0])
    with pytest.raises(ClientError) as e:
        ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[sha256(layers[0])])
    assert error(e)[0] == "LayerAlreadyExistsException"

    # The blob is downloadable where GetDownloadUrlForLayer says.
    url = ecr.get_download_url_for_layer(repositoryName=n, layerDigest=img.layer_digests[0])
    assert url["layerDigest"] == img.layer_digests[0]
    assert url["downloadUrl"].startswith("http")

    # PutImage now succeeds.
    resp = put(ecr, n, img, tag="v1")["image"]
    assert resp == {
        "registryId": ACCOUNT,
        "repositoryName": n,
        "imageId": {"imageDigest": img.digest, "imageTag": "v1"},
        "imageManifest": img.manifest,
        "imageManifestMediaType": DOCKER_V2,
    }


def test_layer_part_out_of_order(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    data = os.urandom(300)
    uid = ecr.initiate_layer_upload(repositoryName=n)["uploadId"]
    ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=99, layerPartBlob=data[:100])
    # A gap: the next part must start at byte 100.
    with pytest.raises(ecr.exceptions.InvalidLayerPartException) as e:
        ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=150, partLastByte=299, layerPartBlob=data[150:])
    r = e.value.response
    assert r["Error"]["Code"] == "InvalidLayerPartException"
    assert r["lastValidByteReceived"] == 99
    assert r["uploadId"] == uid
    assert r["repositoryName"] == n
    assert r["registryId"] == ACCOUNT
    # Re-sending the first part again is out of order too.
    with pytest.raises(ClientError) as e:
        ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=99, layerPartBlob=data[:100])
    assert error(e)[0] == "InvalidLayerPartException"
    assert e.value.response["lastValidByteReceived"] == 99
    # A range that does not match the blob length.
    with pytest.raises(ClientError) as e:
        ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=100, partLastByte=120, layerPartBlob=data[100:110])
    assert error(e)[0] == "InvalidLayerPartException"
    assert e.value.response["lastValidByteReceived"] == 99
    # The upload is still usable.
    ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=100, partLastByte=299, layerPartBlob=data[100:])
    assert ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[sha256(data)])["layerDigest"] == sha256(data)


def test_layer_upload_wrong_digest(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    data = os.urandom(64)
    uid = ecr.initiate_layer_upload(repositoryName=n)["uploadId"]
    ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=63, layerPartBlob=data)
    wrong = sha256(b"something else")
    with pytest.raises(ClientError) as e:
        ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[wrong])
    assert error(e)[0] == "InvalidLayerException"
    avail = ecr.batch_check_layer_availability(repositoryName=n, layerDigests=[wrong, sha256(data)])
    assert avail["layers"] == []
    assert len(avail["failures"]) == 2


def test_layer_upload_finished_upload_is_gone(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    data = os.urandom(32)
    uid = ecr.initiate_layer_upload(repositoryName=n)["uploadId"]
    ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=31, layerPartBlob=data)
    ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[sha256(data)])
    with pytest.raises(ClientError) as e:
        ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=32, partLastByte=32, layerPartBlob=b"x")
    assert error(e)[0] == "UploadNotFoundException"
    with pytest.raises(ClientError) as e:
        ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[sha256(data)])
    assert error(e)[0] == "UploadNotFoundException"
    with pytest.raises(ClientError) as e:
        ecr.complete_layer_upload(repositoryName=n, uploadId="not-a-uuid", layerDigests=[sha256(data)])
    assert error(e)[0] == "InvalidParameterException"


def test_layer_upload_empty(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    uid = ecr.initiate_layer_upload(repositoryName=n)["uploadId"]
    with pytest.raises(ClientError) as e:
        ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[sha256(b"")])
    assert error(e)[0] == "EmptyUploadException"


def test_layer_upload_unknown_upload(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    uid = str(uuid.uuid4())
    with pytest.raises(ClientError) as e:
        ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=2, layerPartBlob=b"abc")
    assert error(e)[0] == "UploadNotFoundException"
    with pytest.raises(ClientError) as e:
        ecr.complete_layer_upload(repositoryName=n, uploadId=uid, layerDigests=[sha256(b"abc")])
    assert error(e)[0] == "UploadNotFoundException"
    # An upload of another repository is unknown here.
    other = name("other")
    ecr.create_repository(repositoryName=other)
    uid = ecr.initiate_layer_upload(repositoryName=other)["uploadId"]
    with pytest.raises(ClientError) as e:
        ecr.upload_layer_part(repositoryName=n, uploadId=uid, partFirstByte=0, partLastByte=2, layerPartBlob=b"abc")
    assert error(e)[0] == "UploadNotFoundException"


def test_layer_ops_missing_repository(ecr, name):
    n = name()
    for call in (
        lambda: ecr.initiate_layer_upload(repositoryName=n),
        lambda: ecr.batch_check_layer_availability(repositoryName=n, layerDigests=[sha256(b"x")]),
        lambda: ecr.get_download_url_for_layer(repositoryName=n, layerDigest=sha256(b"x")),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error(e) == ("RepositoryNotFoundException", not_found_msg(n))


def test_get_download_url_for_layer(berth, ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img, config, layers = build_image(layer_sizes=(123,))
    push_blobs(ecr, n, config, layers)
    put(ecr, n, img, tag="t")
    resp = ecr.get_download_url_for_layer(repositoryName=n, layerDigest=img.layer_digests[0])
    assert resp["layerDigest"] == img.layer_digests[0]
    assert img.layer_digests[0] in resp["downloadUrl"]
    # The URL serves the layer's bytes (here with the registry token).
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    got = requests.get(resp["downloadUrl"], headers={"Authorization": "Basic " + token}, timeout=10)
    assert got.status_code == 200
    assert got.content == layers[0]
    missing = sha256(b"not uploaded")
    with pytest.raises(ClientError) as e:
        ecr.get_download_url_for_layer(repositoryName=n, layerDigest=missing)
    code, message = error(e)
    assert code == "LayersNotFoundException"
    assert missing in message


def test_download_url_needs_no_credentials(ecr, name):
    """Like ECR's presigned URLs, the download URL works without an Authorization header."""
    n = name()
    ecr.create_repository(repositoryName=n)
    img, config, layers = build_image(layer_sizes=(64,))
    push_blobs(ecr, n, config, layers)
    put(ecr, n, img, tag="t")
    url = ecr.get_download_url_for_layer(repositoryName=n, layerDigest=img.layer_digests[0])["downloadUrl"]
    got = requests.get(url, timeout=10)
    assert got.status_code == 200, (got.status_code, got.text)
    assert got.content == layers[0]
    assert requests.get(url.replace(url[-4:], "xxxx"), timeout=10).status_code == 403


def test_download_url_grants_one_blob_get_and_nothing_else(berth, ecr, name):
    """Found by the security review: the URL's token was an ordinary registry
    token (other digests, Basic auth, pushes, deletes). Now it is a grant for
    one GET of one blob in one repository."""
    n, other = name(), name("other")
    for r in (n, other):
        ecr.create_repository(repositoryName=r)
    img, config, layers = build_image(layer_sizes=(64,))
    push_blobs(ecr, n, config, layers)
    push_blobs(ecr, other, config, layers)
    put(ecr, n, img, tag="t")
    url = ecr.get_download_url_for_layer(repositoryName=n, layerDigest=img.layer_digests[0])["downloadUrl"]
    base, query = url.split("?", 1)
    key, token = query.split("=", 1)
    root = base.split("/v2/")[0]
    # Another digest, another repository, the manifest, a HEAD, a DELETE: refused.
    config_digest = img.config_digest
    assert requests.get(f"{root}/v2/{n}/blobs/{config_digest}?{key}={token}", timeout=10).status_code == 403
    assert requests.get(f"{root}/v2/{other}/blobs/{img.layer_digests[0]}?{key}={token}", timeout=10).status_code == 403
    assert requests.get(f"{root}/v2/{n}/manifests/t?{key}={token}", timeout=10).status_code == 403
    assert requests.delete(f"{base}?{key}={token}", timeout=10).status_code == 403
    assert requests.post(f"{root}/v2/{n}/blobs/uploads/?{key}={token}", timeout=10).status_code == 403
    # As a Basic password it is no registry token.
    r = requests.get(f"{root}/v2/{n}/manifests/t", auth=("AWS", token), timeout=10)
    assert r.status_code == 401, r.text
    # And a real registry token is never accepted in a query string.
    reg_token = base64.b64decode(
        ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    ).decode().split(":", 1)[1]
    for param in (key, "X-Berth-Token"):
        r = requests.get(f"{base}?{param}={reg_token}", timeout=10)
        assert r.status_code in (401, 403), (param, r.status_code)
    assert requests.get(f"{base}?{key}={token}", timeout=10).status_code == 200


def test_download_url_does_not_make_a_pusher(berth, ecr, name):
    """A user denied ecr:GetAuthorizationToken but allowed GetDownloadUrlForLayer
    once pushed a whole image with the URL's token as a Basic password."""
    n = name()
    ecr.create_repository(repositoryName=n)
    img, config, layers = build_image(layer_sizes=(32,))
    push_blobs(ecr, n, config, layers)
    put(ecr, n, img, tag="t")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["ecr:GetDownloadUrlForLayer", "ecr:PutImage",
                                           "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                                           "ecr:CompleteLayerUpload", "ecr:BatchDeleteImage"],
             "Resource": arn(n)},
            {"Effect": "Deny", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        ],
    }
    _, _, client = berth.user_with_policy(policy)
    url = client.get_download_url_for_layer(repositoryName=n, layerDigest=img.layer_digests[0])["downloadUrl"]
    token = url.split("=", 1)[1]
    root = url.split("/v2/")[0]
    r = requests.post(f"{root}/v2/{n}/blobs/uploads/", auth=("AWS", token), timeout=10)
    assert r.status_code == 401, r.text
    r = requests.delete(f"{root}/v2/{n}/manifests/{img.digest}", auth=("AWS", token), timeout=10)
    assert r.status_code == 401, r.text
    assert ecr.describe_images(repositoryName=n)["imageDetails"][0]["imageDigest"] == img.digest


# ---- PutImage --------------------------------------------------------------------


def test_put_image_missing_layer(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img, config, layers = build_image(layer_sizes=(50, 60))
    upload_blob(ecr, n, config)
    upload_blob(ecr, n, layers[0])  # layers[1] never uploaded
    with pytest.raises(ClientError) as e:
        put(ecr, n, img, tag="v1")
    code, message = error(e)
    assert code == "LayersNotFoundException"
    assert img.layer_digests[1] in message
    assert ecr.list_images(repositoryName=n)["imageIds"] == []
    # Missing config blob counts too.
    img2, config2, layers2 = build_image(layer_sizes=(10,))
    upload_blob(ecr, n, layers2[0])
    with pytest.raises(ClientError) as e:
        put(ecr, n, img2)
    assert error(e)[0] == "LayersNotFoundException"


def test_put_image_digest_mismatch(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img = new_image(ecr, n)
    with pytest.raises(ClientError) as e:
        put(ecr, n, img, tag="v1", imageDigest="sha256:" + "0" * 64)
    assert error(e)[0] == "ImageDigestDoesNotMatchException"
    # The right digest is accepted.
    r = put(ecr, n, img, tag="v1", imageDigest=img.digest)
    assert r["image"]["imageId"] == {"imageDigest": img.digest, "imageTag": "v1"}


def test_put_image_already_exists_and_retag(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img = new_image(ecr, n)
    put(ecr, n, img, tag="v1")
    with pytest.raises(ClientError) as e:
        put(ecr, n, img, tag="v1")
    assert error(e) == (
        "ImageAlreadyExistsException",
        f"Image with digest '{img.digest}' and tag 'v1' already exists in the repository with name '{n}' in registry with id '{ACCOUNT}'",
    )
    pushed_at = ecr.describe_images(repositoryName=n)["imageDetails"][0]["imagePushedAt"]
    time.sleep(0.05)
    # Retag: same manifest, a new tag.
    r = put(ecr, n, img, tag="v2")["image"]
    assert r["imageId"] == {"imageDigest": img.digest, "imageTag": "v2"}
    assert r["imageManifest"] == img.manifest
    d = ecr.describe_images(repositoryName=n)["imageDetails"]
    assert len(d) == 1
    assert sorted(d[0]["imageTags"]) == ["v1", "v2"]
    assert d[0]["imagePushedAt"] == pushed_at  # retagging is not a push of the image


def test_put_image_untagged_then_tag(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img = new_image(ecr, n)
    r = put(ecr, n, img)["image"]
    assert r["imageId"] == {"imageDigest": img.digest}
    assert ecr.list_images(repositoryName=n)["imageIds"] == [{"imageDigest": img.digest}]
    put(ecr, n, img, tag="later")
    assert ecr.list_images(repositoryName=n)["imageIds"] == [{"imageDigest": img.digest, "imageTag": "later"}]


def test_put_image_mutable_tag_moves(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    a = new_image(ecr, n)
    b = new_image(ecr, n)
    put(ecr, n, a, tag="latest")
    put(ecr, n, b, tag="latest")
    ids = ecr.list_images(repositoryName=n)["imageIds"]
    assert sorted(ids, key=lambda i: i["imageDigest"]) == sorted(
        [{"imageDigest": a.digest}, {"imageDigest": b.digest, "imageTag": "latest"}],
        key=lambda i: i["imageDigest"],
    )


def test_put_image_immutable(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n, imageTagMutability="IMMUTABLE")
    a = new_image(ecr, n)
    b = new_image(ecr, n)
    put(ecr, n, a, tag="v1")
    with pytest.raises(ClientError) as e:
        put(ecr, n, b, tag="v1")
    assert error(e) == (
        "ImageTagAlreadyExistsException",
        f"The image tag 'v1' already exists in the '{n}' repository and cannot be overwritten because the repository is immutable.",
    )
    # The tag did not move; b was not stored.
    got = ecr.batch_get_image(repositoryName=n, imageIds=[{"imageTag": "v1"}])["images"]
    assert got[0]["imageId"]["imageDigest"] == a.digest
    assert [d["imageDigest"] for d in ecr.describe_images(repositoryName=n)["imageDetails"]] == [a.digest]
    # A new tag on the existing digest is allowed; so is pushing b under a new tag.
    assert put(ecr, n, a, tag="v1-alias")["image"]["imageId"]["imageTag"] == "v1-alias"
    assert put(ecr, n, b, tag="v2")["image"]["imageId"]["imageDigest"] == b.digest
    # Delete-then-push is the escape hatch.
    ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageTag": "v2"}])
    put(ecr, n, a, tag="v2")


def test_put_image_exclusion_filters(ecr, name):
    imm = name("imm")
    ecr.create_repository(
        repositoryName=imm,
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[
            {"filterType": "WILDCARD", "filter": "latest"},
            {"filterType": "WILDCARD", "filter": "dev-*"},
        ],
    )
    a, b = new_image(ecr, imm), new_image(ecr, imm)
    for t in ("latest", "dev-1", "v1", "devX"):
        put(ecr, imm, a, tag=t)
    put(ecr, imm, b, tag="latest")  # excluded: mutable
    put(ecr, imm, b, tag="dev-1")  # excluded: mutable
    for t in ("v1", "devX"):  # not excluded: immutable
        with pytest.raises(ClientError) as e:
            put(ecr, imm, b, tag=t)
        assert error(e)[0] == "ImageTagAlreadyExistsException", t

    mut = name("mut")
    ecr.create_repository(
        repositoryName=mut,
        imageTagMutability="MUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "release-*"}],
    )
    a, b = new_image(ecr, mut), new_image(ecr, mut)
    put(ecr, mut, a, tag="release-1")
    put(ecr, mut, a, tag="main")
    put(ecr, mut, b, tag="main")
    with pytest.raises(ClientError) as e:
        put(ecr, mut, b, tag="release-1")
    assert error(e)[0] == "ImageTagAlreadyExistsException"


def test_put_image_media_type_rules(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img, config, layers = build_image(layer_sizes=(40,), media_type=OCI_MANIFEST, with_media_type=False)
    push_blobs(ecr, n, config, layers)
    with pytest.raises(ClientError) as e:
        put(ecr, n, img, tag="v1")
    code, message = error(e)
    assert code == "InvalidParameterException"
    assert message.startswith("Invalid parameter at 'imageManifestMediaType' failed to satisfy constraint: '")
    r = put(ecr, n, img, tag="v1", imageManifestMediaType=OCI_MANIFEST)["image"]
    assert r["imageManifestMediaType"] == OCI_MANIFEST
    assert r["imageId"] == {"imageDigest": img.digest, "imageTag": "v1"}
    d = ecr.describe_images(repositoryName=n)["imageDetails"][0]
    assert d["imageManifestMediaType"] == OCI_MANIFEST
    assert d["artifactMediaType"] == OCI_CONFIG


def test_put_image_invalid_manifest_and_tag(ecr_raw, ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=n, imageManifest="{not json", imageManifestMediaType=DOCKER_V2)
    assert error(e)[0] == "InvalidParameterException"
    img = new_image(ecr, n)
    with pytest.raises(ClientError) as e:
        ecr_raw.put_image(repositoryName=n, imageManifest=img.manifest, imageTag="x" * 301)
    assert error(e) == ("InvalidParameterException", constraint_msg("imageTag", "must have length less than or equal to 300"))
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=n, imageManifest=img.manifest, imageTag="bad tag!")
    code, message = error(e)
    assert code == "InvalidParameterException"
    assert message.startswith("Invalid parameter at 'imageTag' failed to satisfy constraint: 'must satisfy regular expression '"), message
    missing = name("missing")
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=missing, imageManifest=img.manifest)
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(missing))


# ---- ListImages / DescribeImages -------------------------------------------------------


@pytest.fixture
def gallery(ecr, name):
    """A repository with: A tagged a1+a2, B tagged b, C untagged."""
    n = name()
    ecr.create_repository(repositoryName=n)
    a = new_image(ecr, n, layer_sizes=(1000, 2000, 3000))
    b = new_image(ecr, n, layer_sizes=(10,))
    c = new_image(ecr, n, layer_sizes=(77, 33))
    put(ecr, n, a, tag="a1")
    put(ecr, n, a, tag="a2")
    put(ecr, n, b, tag="b")
    put(ecr, n, c)
    return n, a, b, c


def key(i):
    return (i["imageDigest"], i.get("imageTag", ""))


def test_list_images(ecr, gallery):
    n, a, b, c = gallery
    ids = ecr.list_images(repositoryName=n)["imageIds"]
    expected = [
        {"imageDigest": a.digest, "imageTag": "a1"},
        {"imageDigest": a.digest, "imageTag": "a2"},
        {"imageDigest": b.digest, "imageTag": "b"},
        {"imageDigest": c.digest},
    ]
    assert sorted(ids, key=key) == sorted(expected, key=key)
    tagged = ecr.list_images(repositoryName=n, filter={"tagStatus": "TAGGED"})["imageIds"]
    assert sorted(tagged, key=key) == sorted(expected[:3], key=key)
    untagged = ecr.list_images(repositoryName=n, filter={"tagStatus": "UNTAGGED"})["imageIds"]
    assert untagged == [{"imageDigest": c.digest}]
    anyst = ecr.list_images(repositoryName=n, filter={"tagStatus": "ANY"})["imageIds"]
    assert sorted(anyst, key=key) == sorted(expected, key=key)


@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_list_images_pagination(ecr, gallery, page_size):
    n, a, b, c = gallery
    full = ecr.list_images(repositoryName=n)["imageIds"]
    seen, tokens, kwargs = [], [], {"maxResults": page_size}
    while True:
        r = ecr.list_images(repositoryName=n, **kwargs)
        assert len(r["imageIds"]) <= page_size
        seen += r["imageIds"]
        tok = r.get("nextToken")
        if not tok:
            break
        assert tok not in tokens
        tokens.append(tok)
        kwargs["nextToken"] = tok
    assert sorted(seen, key=key) == sorted(full, key=key)
    assert len(seen) == 4
    pages = list(ecr.get_paginator("list_images").paginate(repositoryName=n, PaginationConfig={"PageSize": page_size}))
    via_paginator = [i for p in pages for i in p["imageIds"]]
    assert sorted(via_paginator, key=key) == sorted(full, key=key)
    # Filtered pagination.
    tagged = ecr.get_paginator("list_images").paginate(
        repositoryName=n, filter={"tagStatus": "TAGGED"}, PaginationConfig={"PageSize": page_size}
    ).build_full_result()["imageIds"]
    assert sorted(tagged, key=key) == sorted([i for i in full if "imageTag" in i], key=key)


def test_list_images_bad_paging(ecr_raw, gallery):
    n = gallery[0]
    for kwargs in ({"maxResults": 0}, {"maxResults": 1001}, {"nextToken": "!!garbage!!"}):
        with pytest.raises(ClientError) as e:
            ecr_raw.list_images(repositoryName=n, **kwargs)
        assert error(e)[0] == "InvalidParameterException", kwargs
    with pytest.raises(ClientError) as e:
        ecr_raw.list_images(repositoryName=n, filter={"tagStatus": "SOMETIMES"})
    assert error(e)[0] == "InvalidParameterException"


def test_describe_images(ecr, gallery):
    n, a, b, c = gallery
    details = ecr.describe_images(repositoryName=n)["imageDetails"]
    by_digest = {d["imageDigest"]: d for d in details}
    assert set(by_digest) == {a.digest, b.digest, c.digest}
    for img in (a, b, c):
        d = by_digest[img.digest]
        assert d["registryId"] == ACCOUNT
        assert d["repositoryName"] == n
        assert d["imageSizeInBytes"] == img.layer_bytes
        assert_recent(d["imagePushedAt"], seconds=600)
        assert d["imageManifestMediaType"] == DOCKER_V2
        assert d["artifactMediaType"] == DOCKER_CONFIG
    assert by_digest[a.digest]["imageSizeInBytes"] == 6000
    assert sorted(by_digest[a.digest]["imageTags"]) == ["a1", "a2"]
    assert by_digest[b.digest]["imageTags"] == ["b"]
    assert "imageTags" not in by_digest[c.digest]

    # By id: tag or digest, one detail per digest.
    got = ecr.describe_images(repositoryName=n, imageIds=[{"imageTag": "a1"}, {"imageDigest": a.digest}, {"imageTag": "b"}])[
        "imageDetails"
    ]
    assert sorted(d["imageDigest"] for d in got) == sorted([a.digest, b.digest])

    tagged = ecr.describe_images(repositoryName=n, filter={"tagStatus": "TAGGED"})["imageDetails"]
    assert sorted(d["imageDigest"] for d in tagged) == sorted([a.digest, b.digest])
    untagged = ecr.describe_images(repositoryName=n, filter={"tagStatus": "UNTAGGED"})["imageDetails"]
    assert [d["imageDigest"] for d in untagged] == [c.digest]


def test_describe_images_not_found(ecr, gallery):
    n, a, b, c = gallery
    with pytest.raises(ClientError) as e:
        ecr.describe_images(repositoryName=n, imageIds=[{"imageTag": "a1"}, {"imageTag": "nope"}])
    assert error(e) == (
        "ImageNotFoundException",
        f"The image with imageId {{imageDigest:'null', imageTag:'nope'}} does not exist within the repository with name '{n}' in the registry with id '{ACCOUNT}'",
    )
    missing = "sha256:" + "ab" * 32
    with pytest.raises(ClientError) as e:
        ecr.describe_images(repositoryName=n, imageIds=[{"imageDigest": missing}])
    assert error(e) == (
        "ImageNotFoundException",
        f"The image with imageId {{imageDigest:'{missing}', imageTag:'null'}} does not exist within the repository with name '{n}' in the registry with id '{ACCOUNT}'",
    )


def test_describe_images_ids_exclude_paging(ecr, gallery):
    n = gallery[0]
    for kwargs in ({"maxResults": 5}, {"nextToken": "x"}):
        with pytest.raises(ClientError) as e:
            ecr.describe_images(repositoryName=n, imageIds=[{"imageTag": "a1"}], **kwargs)
        assert error(e)[0] == "InvalidParameterException", kwargs


def test_describe_images_pagination(ecr, gallery):
    n, a, b, c = gallery
    seen, tokens, kwargs = [], [], {"maxResults": 1}
    while True:
        r = ecr.describe_images(repositoryName=n, **kwargs)
        assert len(r["imageDetails"]) <= 1
        seen += [d["imageDigest"] for d in r["imageDetails"]]
        tok = r.get("nextToken")
        if not tok:
            break
        assert tok not in tokens
        tokens.append(tok)
        kwargs["nextToken"] = tok
    assert sorted(seen) == sorted([a.digest, b.digest, c.digest])
    assert len(tokens) == 2
    pages = list(ecr.get_paginator("describe_images").paginate(repositoryName=n, PaginationConfig={"PageSize": 2}))
    assert [len(p["imageDetails"]) for p in pages] == [2, 1]
    assert sorted(d["imageDigest"] for p in pages for d in p["imageDetails"]) == sorted([a.digest, b.digest, c.digest])
    with pytest.raises(ClientError) as e:
        ecr.describe_images(repositoryName=n, nextToken="bm90IGEgdG9rZW4")
    assert error(e)[0] == "InvalidParameterException"


# ---- BatchGetImage ---------------------------------------------------------------------


def test_batch_get_image(ecr, gallery):
    n, a, b, c = gallery
    r = ecr.batch_get_image(
        repositoryName=n,
        imageIds=[{"imageTag": "a2"}, {"imageDigest": c.digest}, {"imageDigest": b.digest, "imageTag": "b"}],
    )
    assert r["failures"] == []
    images = r["images"]
    assert [i["imageId"] for i in images] == [
        {"imageDigest": a.digest, "imageTag": "a2"},
        {"imageDigest": c.digest},
        {"imageDigest": b.digest, "imageTag": "b"},
    ]
    assert [i["imageManifest"] for i in images] == [a.manifest, c.manifest, b.manifest]
    for i in images:
        assert i["registryId"] == ACCOUNT
        assert i["repositoryName"] == n
        assert i["imageManifestMediaType"] == DOCKER_V2
        assert sha256(i["imageManifest"].encode()) == i["imageId"]["imageDigest"]
    r = ecr.batch_get_image(repositoryName=n, imageIds=[{"imageTag": "a1"}], acceptedMediaTypes=[DOCKER_V2, OCI_MANIFEST])
    assert r["images"][0]["imageManifest"] == a.manifest


def test_batch_get_image_failures(ecr, gallery):
    n, a, b, c = gallery
    missing = "sha256:" + "cd" * 32
    r = ecr.batch_get_image(
        repositoryName=n,
        imageIds=[
            {"imageTag": "nope"},
            {"imageDigest": missing},
            {"imageTag": "a1", "imageDigest": b.digest},
            {},
            {"imageTag": "b"},
        ],
    )
    assert [i["imageId"] for i in r["images"]] == [{"imageDigest": b.digest, "imageTag": "b"}]
    assert r["failures"] == [
        {"imageId": {"imageTag": "nope"}, "failureCode": "ImageNotFound", "failureReason": "Requested image not found"},
        {"imageId": {"imageDigest": missing}, "failureCode": "ImageNotFound", "failureReason": "Requested image not found"},
        {
            "imageId": {"imageDigest": b.digest, "imageTag": "a1"},
            "failureCode": "ImageTagDoesNotMatchDigest",
            "failureReason": r["failures"][2]["failureReason"],
        },
        {"imageId": {}, "failureCode": "MissingDigestAndTag", "failureReason": r["failures"][3]["failureReason"]},
    ]
    with pytest.raises(ClientError) as e:
        ecr.batch_get_image(repositoryName=n + "-missing", imageIds=[{"imageTag": "a1"}])
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(n + "-missing"))


# ---- BatchDeleteImage -------------------------------------------------------------------


def test_batch_delete_image_by_tag_keeps_other_tags(ecr, gallery):
    n, a, b, c = gallery
    r = ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageTag": "a2"}])
    assert r["imageIds"] == [{"imageDigest": a.digest, "imageTag": "a2"}]
    assert r["failures"] == []
    d = ecr.describe_images(repositoryName=n, imageIds=[{"imageDigest": a.digest}])["imageDetails"][0]
    assert d["imageTags"] == ["a1"]
    # Deleting the last tag deletes the image.
    r = ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageTag": "b"}])
    assert r["imageIds"] == [{"imageDigest": b.digest, "imageTag": "b"}]
    assert b.digest not in [d["imageDigest"] for d in ecr.describe_images(repositoryName=n)["imageDetails"]]


def test_batch_delete_image_by_digest(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img = new_image(ecr, n)
    for t in ("x", "y", "z"):
        put(ecr, n, img, tag=t)
    r = ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageDigest": img.digest}])
    assert sorted(r["imageIds"], key=key) == [
        {"imageDigest": img.digest, "imageTag": t} for t in ("x", "y", "z")
    ]
    assert r["failures"] == []
    assert ecr.list_images(repositoryName=n)["imageIds"] == []
    # An untagged image deleted by digest: one entry, digest only.
    untagged = new_image(ecr, n)
    put(ecr, n, untagged)
    r = ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageDigest": untagged.digest}])
    assert r["imageIds"] == [{"imageDigest": untagged.digest}]


def test_batch_delete_image_failures(ecr, gallery):
    n, a, b, c = gallery
    missing = "sha256:" + "ef" * 32
    r = ecr.batch_delete_image(
        repositoryName=n,
        imageIds=[{"imageTag": "nope"}, {"imageDigest": missing}, {}, {"imageTag": "a1", "imageDigest": c.digest}],
    )
    assert r["imageIds"] == []
    assert [(f["imageId"], f["failureCode"]) for f in r["failures"]] == [
        ({"imageTag": "nope"}, "ImageNotFound"),
        ({"imageDigest": missing}, "ImageNotFound"),
        ({}, "MissingDigestAndTag"),
        ({"imageDigest": c.digest, "imageTag": "a1"}, "ImageTagDoesNotMatchDigest"),
    ]
    assert r["failures"][0]["failureReason"] == "Requested image not found"
    # Nothing was deleted.
    assert len(ecr.list_images(repositoryName=n)["imageIds"]) == 4


def test_manifest_list_children(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    amd, arm = new_image(ecr, n, layer_sizes=(100,)), new_image(ecr, n, layer_sizes=(250,))
    put(ecr, n, amd)
    put(ecr, n, arm, tag="arm-only")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {"mediaType": DOCKER_V2, "size": len(amd.manifest.encode()), "digest": amd.digest, "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": DOCKER_V2, "size": len(arm.manifest.encode()), "digest": arm.digest, "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        }
    )
    r = ecr.put_image(repositoryName=n, imageManifest=index, imageTag="multi")["image"]
    assert r["imageManifestMediaType"] == DOCKER_LIST
    idx_digest = sha256(index.encode())
    assert r["imageId"] == {"imageDigest": idx_digest, "imageTag": "multi"}
    d = ecr.describe_images(repositoryName=n, imageIds=[{"imageTag": "multi"}])["imageDetails"][0]
    assert d["imageManifestMediaType"] == DOCKER_LIST
    assert d["imageSizeInBytes"] == 250  # the largest child
    got = ecr.batch_get_image(repositoryName=n, imageIds=[{"imageTag": "multi"}])["images"][0]
    assert got["imageManifest"] == index
    assert got["imageManifestMediaType"] == DOCKER_LIST

    # Children of an index cannot be deleted while it exists.
    r = ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageDigest": amd.digest}, {"imageTag": "arm-only"}])
    assert r["imageIds"] == []
    assert [(f["imageId"], f["failureCode"]) for f in r["failures"]] == [
        ({"imageDigest": amd.digest}, "ImageReferencedByManifestList"),
        ({"imageTag": "arm-only"}, "ImageReferencedByManifestList"),
    ]
    r = ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageTag": "multi"}])
    assert r["imageIds"] == [{"imageDigest": idx_digest, "imageTag": "multi"}]
    r = ecr.batch_delete_image(repositoryName=n, imageIds=[{"imageDigest": amd.digest}])
    assert r["imageIds"] == [{"imageDigest": amd.digest}]
    assert r["failures"] == []

    # An index whose child is not in the repository.
    with pytest.raises(ClientError) as e:
        ecr.put_image(repositoryName=n, imageManifest=index, imageTag="broken")
    assert error(e)[0] == "ReferencedImagesNotFoundException"


# ---- GetAuthorizationToken ----------------------------------------------------------------


def test_get_authorization_token(berth, ecr):
    r = ecr.get_authorization_token()
    assert len(r["authorizationData"]) == 1
    data = r["authorizationData"][0]
    assert set(data) == {"authorizationToken", "expiresAt", "proxyEndpoint"}
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS"
    assert password and ":" not in password
    assert not any(ch.isspace() for ch in data["authorizationToken"])
    # The scheme Berth is reached with: plain HTTP here (tests/tls.rs covers HTTPS).
    assert data["proxyEndpoint"] == f"http://{berth.addr}"
    now = datetime.datetime.now(datetime.timezone.utc)
    assert isinstance(data["expiresAt"], datetime.datetime)
    assert abs((data["expiresAt"] - now).total_seconds() - 12 * 3600) < 120
    # The password opens /v2/.
    req = urllib.request.Request(berth.endpoint + "/v2/", headers={"Authorization": "Basic " + data["authorizationToken"]})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200

    two = ecr.get_authorization_token(registryIds=[ACCOUNT, SECOND_ACCOUNT])["authorizationData"]
    assert len(two) == 2
    assert two[0]["proxyEndpoint"] == f"http://{berth.addr}"
    assert two[1]["proxyEndpoint"] == f"http://{SECOND_ACCOUNT}.{berth.addr}"


@pytest.mark.parametrize("ids", [["abc"], ["12345678901"], ["1234567890123"], [ACCOUNT] * 11])
def test_get_authorization_token_bad_registry_ids(ecr_raw, ids):
    with pytest.raises(ClientError) as e:
        ecr_raw.get_authorization_token(registryIds=ids)
    code, message = error(e)
    assert code == "InvalidParameterException"
    assert message.startswith("Invalid parameter at 'registryIds' failed to satisfy constraint: '"), message


# ---- authentication errors ---------------------------------------------------------------


def test_wire_format(berth, ecr, name):
    """Raw JSON 1.1: epoch-second numbers for timestamps, `{}` for empty outputs."""
    n = name()
    ecr.create_repository(repositoryName=n)
    r = signed_post(berth, "DescribeRepositories", json.dumps({"repositoryNames": [n]}).encode())
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/x-amz-json-1.1"
    created = r.json()["repositories"][0]["createdAt"]
    assert isinstance(created, (int, float)) and not isinstance(created, bool)
    assert abs(created - time.time()) < 300
    r = signed_post(berth, "TagResource", json.dumps({"resourceArn": arn(n), "tags": [{"Key": "a", "Value": "b"}]}).encode())
    assert r.status_code == 200 and r.json() == {}
    r = signed_post(berth, "GetAuthorizationToken", b"{}")
    expires = r.json()["authorizationData"][0]["expiresAt"]
    assert isinstance(expires, (int, float)) and abs(expires - time.time() - 43200) < 300
    # An empty body is accepted like `{}`; unknown members are ignored.
    r = signed_post(berth, "DescribeRegistry", b"")
    assert r.status_code == 200 and r.json()["registryId"] == ACCOUNT
    r = signed_post(berth, "DescribeRegistry", b'{"someFutureMember": 1}')
    assert r.status_code == 200
    r = signed_post(berth, "DescribeRepositories", json.dumps({"repositoryNames": [name("missing")]}).encode())
    assert_error_response(r, 400, "RepositoryNotFoundException")
    assert r.headers["Content-Type"] == "application/x-amz-json-1.1"


def test_request_id_on_success_and_error(ecr, name):
    r = ecr.describe_registry()
    md = r["ResponseMetadata"]
    assert md["RequestId"]
    assert md["HTTPHeaders"]["x-amzn-requestid"] == md["RequestId"]
    assert md["HTTPHeaders"]["content-type"] == "application/x-amz-json-1.1"
    with pytest.raises(ClientError) as e:
        ecr.describe_repositories(repositoryNames=[name()])
    md = e.value.response["ResponseMetadata"]
    assert md["RequestId"]
    assert md["HTTPHeaders"]["x-amzn-requestid"] == md["RequestId"]
    assert md["HTTPHeaders"]["x-amzn-errortype"] == "RepositoryNotFoundException"
    assert md["HTTPStatusCode"] == 400


def test_unknown_access_key(berth):
    client = berth.client("AKIAZZZZZZZZZZZZZZZZ", "x" * 40)
    with pytest.raises(ClientError) as e:
        client.describe_registry()
    assert error(e)[0] == "UnrecognizedClientException"
    md = e.value.response["ResponseMetadata"]
    assert md["HTTPStatusCode"] == 400
    assert md["HTTPHeaders"]["x-amzn-errortype"] == "UnrecognizedClientException"
    assert md["RequestId"]


def test_wrong_secret(berth):
    client = berth.client(ROOT_KEY_ID, "wrong" + ROOT_SECRET[5:])
    with pytest.raises(ClientError) as e:
        client.describe_repositories()
    assert error(e)[0] == "InvalidSignatureException"
    md = e.value.response["ResponseMetadata"]
    assert md["HTTPStatusCode"] == 400
    assert md["HTTPHeaders"]["x-amzn-errortype"] == "InvalidSignatureException"


def test_signature_expired_manual(berth):
    resp = signed_post(berth, "DescribeRegistry", b"{}", shift=datetime.timedelta(minutes=-20))
    body = assert_error_response(resp, 400, "InvalidSignatureException")
    assert "Signature expired" in body["message"]
    # The same request signed now works: the signing helper is sound.
    ok = signed_post(berth, "DescribeRegistry", b"{}")
    assert ok.status_code == 200, ok.text
    assert ok.json()["registryId"] == ACCOUNT
    assert ok.headers.get("x-amzn-RequestId")
    # Ten minutes of skew is within the tolerance.
    assert signed_post(berth, "DescribeRegistry", b"{}", shift=datetime.timedelta(minutes=-10)).status_code == 200
    assert signed_post(berth, "DescribeRegistry", b"{}", shift=datetime.timedelta(minutes=10)).status_code == 200
    future = signed_post(berth, "DescribeRegistry", b"{}", shift=datetime.timedelta(minutes=20))
    body = assert_error_response(future, 400, "InvalidSignatureException")
    assert "Signature" in body["message"]


def test_signature_expired_boto3(ecr):
    real = botocore.auth.get_current_datetime
    with mock.patch.object(
        botocore.auth,
        "get_current_datetime",
        side_effect=lambda *a, **k: real(*a, **k) - datetime.timedelta(minutes=20),
    ):
        with pytest.raises(ClientError) as e:
            ecr.describe_registry()
    code, message = error(e)
    assert code == "InvalidSignatureException"
    assert "Signature expired" in message


def test_missing_authorization_header(berth):
    req = urllib.request.Request(
        berth.endpoint + "/",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET + "DescribeRepositories"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    body = json.loads(e.value.read())
    assert body["__type"] == "MissingAuthenticationTokenException"
    assert body["message"]
    assert e.value.headers.get("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
    assert e.value.headers.get("x-amzn-RequestId")


def test_unknown_operation(berth):
    resp = signed_post(berth, "FlyToTheMoon", b"{}")
    assert_error_response(resp, 400, "UnknownOperationException")


def test_malformed_json(berth):
    resp = signed_post(berth, "DescribeRepositories", b'{"repositoryNames": [')
    assert_error_response(resp, 400, "SerializationException")
    resp = signed_post(berth, "DescribeRepositories", b"[1, 2]")
    assert_error_response(resp, 400, "SerializationException")
    # A wrongly typed member is a serialization problem too.
    resp = signed_post(berth, "DescribeRepositories", b'{"repositoryNames": "not-a-list"}')
    assert_error_response(resp, 400, "SerializationException")


# ---- authorization -------------------------------------------------------------------------


def test_user_without_policy_is_denied(berth, name):
    user, user_arn, client = berth.user_with_policy(None)
    n = name()
    with pytest.raises(ClientError) as e:
        client.create_repository(repositoryName=n)
    code, message = error(e)
    assert code == "AccessDeniedException"
    assert f"User: {user_arn} is not authorized to perform: ecr:CreateRepository" in message
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "AccessDeniedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        client.get_authorization_token()
    assert error(e)[0] == "AccessDeniedException"


def test_identity_policy_change_is_picked_up(berth, ecr, name):
    """A policy put on a user whose key is already in use applies within the 5 s cache TTL."""
    n = name()
    ecr.create_repository(repositoryName=n)
    user, user_arn, client = berth.user_with_policy(None)
    with pytest.raises(ClientError) as e:
        client.list_images(repositoryName=n)
    assert error(e)[0] == "AccessDeniedException"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ecr:ListImages", "Resource": arn(n)}],
    }
    berth.iam(
        "put-user-policy", "--account-id", ACCOUNT, "--user-name", user,
        "--policy-name", "late", "--policy-document", json.dumps(policy),
    )
    start = time.monotonic()
    while True:
        try:
            assert client.list_images(repositoryName=n)["imageIds"] == []
            break
        except ClientError as err:
            assert err.response["Error"]["Code"] == "AccessDeniedException"
            assert time.monotonic() - start < 8, "policy change not picked up within the cache TTL"
            time.sleep(0.25)


def pull_policy(repo_arn):
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:DescribeImages",
                ],
                "Resource": repo_arn,
            },
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        ],
    }


def test_identity_policy_scoped_to_one_repository(berth, ecr, name):
    allowed, other = name("allowed"), name("other")
    for n in (allowed, other):
        ecr.create_repository(repositoryName=n)
    img = new_image(ecr, allowed, layer_sizes=(20,))
    put(ecr, allowed, img, tag="v1")
    user, user_arn, client = berth.user_with_policy(pull_policy(arn(allowed)))

    d = client.describe_images(repositoryName=allowed)["imageDetails"]
    assert [x["imageDigest"] for x in d] == [img.digest]
    got = client.batch_get_image(repositoryName=allowed, imageIds=[{"imageTag": "v1"}])["images"]
    assert got[0]["imageManifest"] == img.manifest
    assert client.batch_check_layer_availability(repositoryName=allowed, layerDigests=img.layer_digests)["failures"] == []
    client.get_download_url_for_layer(repositoryName=allowed, layerDigest=img.layer_digests[0])
    assert client.get_authorization_token()["authorizationData"]

    denied = [
        ("DescribeImages", lambda: client.describe_images(repositoryName=other), arn(other)),
        ("BatchGetImage", lambda: client.batch_get_image(repositoryName=other, imageIds=[{"imageTag": "v1"}]), arn(other)),
        ("PutImage", lambda: client.put_image(repositoryName=allowed, imageManifest=img.manifest, imageTag="v2"), arn(allowed)),
        ("ListImages", lambda: client.list_images(repositoryName=allowed), arn(allowed)),
        ("InitiateLayerUpload", lambda: client.initiate_layer_upload(repositoryName=allowed), arn(allowed)),
        ("CreateRepository", lambda: client.create_repository(repositoryName=name("new")), None),
        ("DeleteRepository", lambda: client.delete_repository(repositoryName=allowed, force=True), arn(allowed)),
    ]
    for op, call, resource in denied:
        with pytest.raises(ClientError) as e:
            call()
        code, message = error(e)
        assert code == "AccessDeniedException", op
        assert f"User: {user_arn} is not authorized to perform: ecr:{op}" in message, message
        if resource:
            assert message.endswith(f"on resource: {resource}"), message
    # The image and the repository are untouched.
    assert [x["imageTag"] for x in ecr.list_images(repositoryName=allowed)["imageIds"]] == ["v1"]

    # An explicit Deny in the repository policy beats the identity policy's Allow.
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "NoDescribe", "Effect": "Deny", "Principal": {"AWS": user_arn}, "Action": "ecr:DescribeImages"}
        ],
    }
    ecr.set_repository_policy(repositoryName=allowed, policyText=json.dumps(deny))
    with pytest.raises(ClientError) as e:
        client.describe_images(repositoryName=allowed)
    assert error(e)[0] == "AccessDeniedException"
    # Other allowed actions still work.
    assert client.batch_get_image(repositoryName=allowed, imageIds=[{"imageTag": "v1"}])["images"]
    ecr.delete_repository_policy(repositoryName=allowed)
    assert client.describe_images(repositoryName=allowed)["imageDetails"]


def test_repository_policy_grants_same_account_user(berth, ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    user, user_arn, client = berth.user_with_policy(None)
    with pytest.raises(ClientError) as e:
        client.list_images(repositoryName=n)
    assert error(e)[0] == "AccessDeniedException"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": user_arn}, "Action": ["ecr:ListImages"]}],
    }
    ecr.set_repository_policy(repositoryName=n, policyText=json.dumps(policy))
    assert client.list_images(repositoryName=n)["imageIds"] == []


def test_repository_policy_round_trip(ecr, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    with pytest.raises(ClientError) as e:
        ecr.get_repository_policy(repositoryName=n)
    assert error(e) == (
        "RepositoryPolicyNotFoundException",
        f"Repository policy does not exist for the repository with name '{n}' in the registry with id '{ACCOUNT}'",
    )
    with pytest.raises(ClientError) as e:
        ecr.delete_repository_policy(repositoryName=n)
    assert error(e)[0] == "RepositoryPolicyNotFoundException"
    text = json.dumps(
        {
            "Version": "2008-10-17",
            "Statement": [
                {
                    "Sid": "AllowPull",
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                }
            ],
        },
        indent=2,
    )
    r = ecr.set_repository_policy(repositoryName=n, policyText=text)
    assert {k: v for k, v in r.items() if k != "ResponseMetadata"} == {
        "registryId": ACCOUNT,
        "repositoryName": n,
        "policyText": text,
    }
    r = ecr.get_repository_policy(repositoryName=n)
    assert {k: v for k, v in r.items() if k != "ResponseMetadata"} == {
        "registryId": ACCOUNT,
        "repositoryName": n,
        "policyText": text,
    }
    r = ecr.delete_repository_policy(repositoryName=n)
    assert r["policyText"] == text
    assert r["repositoryName"] == n
    with pytest.raises(ClientError) as e:
        ecr.get_repository_policy(repositoryName=n)
    assert error(e)[0] == "RepositoryPolicyNotFoundException"
    missing = name("missing")
    with pytest.raises(ClientError) as e:
        ecr.set_repository_policy(repositoryName=missing, policyText=text)
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(missing))
    with pytest.raises(ClientError) as e:
        ecr.get_repository_policy(repositoryName=missing)
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(missing))


@pytest.mark.parametrize(
    "policy",
    [
        "not json",
        "{}",
        json.dumps({"Version": "2012-10-17", "Statement": "nope"}),
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "ecr:*"}]}),
        json.dumps({"Version": "1999-01-01", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:*"}]}),
    ],
    ids=["not-json", "empty", "statement-string", "bad-effect", "bad-version"],
)
def test_repository_policy_invalid(ecr, name, policy):
    n = name()
    ecr.create_repository(repositoryName=n)
    with pytest.raises(ClientError) as e:
        ecr.set_repository_policy(repositoryName=n, policyText=policy)
    code, message = error(e)
    assert code == "InvalidParameterException"
    assert message.startswith(
        "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided"
    ), message
    with pytest.raises(ClientError) as e:
        ecr.get_repository_policy(repositoryName=n)
    assert error(e)[0] == "RepositoryPolicyNotFoundException"


@pytest.fixture(scope="module")
def second_account(berth):
    out = berth.iam("create-account", "--account-id", SECOND_ACCOUNT)
    assert out["AccountId"] == SECOND_ACCOUNT
    assert out["AccessKeyId"].startswith("AKIA") and len(out["AccessKeyId"]) == 20
    return berth.client(out["AccessKeyId"], out["SecretAccessKey"])


def test_cross_account_pull_needs_repository_policy(berth, ecr, second_account, name):
    n = name()
    ecr.create_repository(repositoryName=n)
    img = new_image(ecr, n, layer_sizes=(64,))
    put(ecr, n, img, tag="shared")
    other = second_account
    # Its own registry is separate.
    assert other.describe_repositories()["repositories"] == [] or all(
        r["registryId"] == SECOND_ACCOUNT for r in other.describe_repositories()["repositories"]
    )
    with pytest.raises(ClientError) as e:
        other.describe_images(repositoryName=n)
    assert error(e) == ("RepositoryNotFoundException", not_found_msg(n, SECOND_ACCOUNT))

    for call in (
        lambda: other.describe_images(registryId=ACCOUNT, repositoryName=n),
        lambda: other.batch_get_image(registryId=ACCOUNT, repositoryName=n, imageIds=[{"imageTag": "shared"}]),
    ):
        with pytest.raises(ClientError) as e:
            call()
        code, message = error(e)
        assert code == "AccessDeniedException"
        assert f"arn:aws:iam::{SECOND_ACCOUNT}:root" in message

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CrossAccountPull",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{SECOND_ACCOUNT}:root"},
                "Action": ["ecr:DescribeImages", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            }
        ],
    }
    ecr.set_repository_policy(repositoryName=n, policyText=json.dumps(policy))
    d = other.describe_images(registryId=ACCOUNT, repositoryName=n)["imageDetails"]
    assert [(x["registryId"], x["imageDigest"], x["imageTags"]) for x in d] == [(ACCOUNT, img.digest, ["shared"])]
    got = other.batch_get_image(registryId=ACCOUNT, repositoryName=n, imageIds=[{"imageTag": "shared"}])
    assert got["failures"] == []
    assert got["images"][0]["imageManifest"] == img.manifest
    assert got["images"][0]["registryId"] == ACCOUNT
    # Still no write access.
    with pytest.raises(ClientError) as e:
        other.put_image(registryId=ACCOUNT, repositoryName=n, imageManifest=img.manifest, imageTag="mine")
    assert error(e)[0] == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        other.list_images(registryId=ACCOUNT, repositoryName=n)
    assert error(e)[0] == "AccessDeniedException"
    # Nor can it create repositories in the other registry.
    with pytest.raises(ClientError) as e:
        other.create_repository(registryId=ACCOUNT, repositoryName=name("intruder"))
    assert error(e)[0] == "AccessDeniedException"
    # Revoking the policy revokes the access.
    ecr.delete_repository_policy(repositoryName=n)
    with pytest.raises(ClientError) as e:
        other.describe_images(registryId=ACCOUNT, repositoryName=n)
    assert error(e)[0] == "AccessDeniedException"


def test_registry_policy_round_trip(ecr):
    with pytest.raises(ClientError) as e:
        ecr.get_registry_policy()
    assert error(e) == (
        "RegistryPolicyNotFoundException",
        f"Registry policy does not exist in the registry with id '{ACCOUNT}'",
    )
    with pytest.raises(ClientError) as e:
        ecr.delete_registry_policy()
    assert error(e)[0] == "RegistryPolicyNotFoundException"
    text = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ReplicationAccessCrossAccount",
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                    "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                    "Resource": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/*",
                }
            ],
        }
    )
    r = ecr.put_registry_policy(policyText=text)
    assert {k: v for k, v in r.items() if k != "ResponseMetadata"} == {"registryId": ACCOUNT, "policyText": text}
    r = ecr.get_registry_policy()
    assert {k: v for k, v in r.items() if k != "ResponseMetadata"} == {"registryId": ACCOUNT, "policyText": text}
    r = ecr.delete_registry_policy()
    assert {k: v for k, v in r.items() if k != "ResponseMetadata"} == {"registryId": ACCOUNT, "policyText": text}
    with pytest.raises(ClientError) as e:
        ecr.get_registry_policy()
    assert error(e)[0] == "RegistryPolicyNotFoundException"
    with pytest.raises(ClientError) as e:
        ecr.put_registry_policy(policyText="{not json")
    code, message = error(e)
    assert code == "InvalidParameterException"
    assert message.startswith("Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided")


# ---- aws CLI v1 -------------------------------------------------------------------------------


def aws(berth, *args, key=ROOT_KEY_ID, secret=ROOT_SECRET, tmp=None):
    return berth.aws("ecr", *args, key_id=key, secret=secret, timeout=120)


def test_aws_cli(berth, ecr, name):
    n = name()
    out = aws(berth, "create-repository", "--repository-name", n, "--image-tag-mutability", "IMMUTABLE", "--tags", "Key=team,Value=cli")
    assert out.returncode == 0, out.stderr
    repo = json.loads(out.stdout)["repository"]
    assert repo["repositoryName"] == n
    assert repo["repositoryArn"] == arn(n)
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert isinstance(repo["createdAt"], (int, float, str))

    out = aws(berth, "describe-repositories", "--repository-names", n)
    assert out.returncode == 0, out.stderr
    repos = json.loads(out.stdout)["repositories"]
    assert [r["repositoryName"] for r in repos] == [n]

    # The CLI paginates on its own (describe-repositories without names).
    out = aws(berth, "describe-repositories", "--page-size", "2")
    assert out.returncode == 0, out.stderr
    names = [r["repositoryName"] for r in json.loads(out.stdout)["repositories"]]
    assert n in names and len(names) == len(set(names))

    img = new_image(ecr, n, layer_sizes=(300, 200))
    put(ecr, n, img, tag="v1")
    out = aws(berth, "describe-images", "--repository-name", n)
    assert out.returncode == 0, out.stderr
    details = json.loads(out.stdout)["imageDetails"]
    assert [(d["imageDigest"], d["imageTags"], d["imageSizeInBytes"]) for d in details] == [(img.digest, ["v1"], 500)]

    out = aws(berth, "get-login-password")
    assert out.returncode == 0, out.stderr
    password = out.stdout.rstrip("\n")
    assert password and "\n" not in password and ":" not in password and not password.startswith("AWS")
    auth = base64.b64encode(f"AWS:{password}".encode()).decode()
    req = urllib.request.Request(berth.endpoint + f"/v2/{n}/tags/list", headers={"Authorization": "Basic " + auth})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["tags"] == ["v1"]

    missing = name("missing")
    out = aws(berth, "describe-images", "--repository-name", missing)
    assert out.returncode != 0
    assert "RepositoryNotFoundException" in out.stderr
    assert f"The repository with name '{missing}' does not exist" in out.stderr
    out = aws(berth, "describe-repositories", "--repository-names", missing)
    assert out.returncode != 0
    assert "RepositoryNotFoundException" in out.stderr
    out = aws(berth, "describe-repositories", key="AKIAZZZZZZZZZZZZZZZZ", secret="nope")
    assert out.returncode != 0
    assert "UnrecognizedClientException" in out.stderr


def test_source_ip_condition(berth, name):
    """aws:SourceIp is the client's address: 127.0.0.0/8 matches these requests, 10.0.0.0/8 does not."""
    def policy(cidr):
        return {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Action": "ecr:CreateRepository",
                "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": cidr}},
            }],
        }
    _, _, local = berth.user_with_policy(policy("127.0.0.0/8"))
    local.create_repository(repositoryName=name("ip-ok"))
    _, _, remote = berth.user_with_policy(policy("10.0.0.0/8"))
    with pytest.raises(ClientError) as e:
        remote.create_repository(repositoryName=name("ip-no"))
    assert error(e)[0] == "AccessDeniedException"

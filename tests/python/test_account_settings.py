"""ECR's GetAccountSetting / PutAccountSetting with boto3 and the aws CLI:
the defaults (what is true of Berth), values Berth takes and what they do,
values it refuses by name, IAM, and settings kept per registry.

A module of its own: BLOB_MOUNTING changes what every push in the registry
does, so no other test shares this server.
"""

import base64
import hashlib
import json
import os

import pytest
import requests
from botocore.exceptions import ClientError


SECOND_ACCOUNT = "222222222222"


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def error(excinfo):
    e = excinfo.value.response["Error"]
    return e["Code"], e["Message"]


def get(ecr, name):
    return ecr.get_account_setting(name=name)


def test_defaults_are_what_berth_does(ecr):
    out = get(ecr, "BASIC_SCAN_TYPE_VERSION")
    assert (out["name"], out["value"]) == ("BASIC_SCAN_TYPE_VERSION", "AWS_NATIVE")
    assert get(ecr, "REGISTRY_POLICY_SCOPE")["value"] == "V2"
    assert get(ecr, "BLOB_MOUNTING")["value"] == "ENABLED"


def test_values_that_describe_berth_are_taken(ecr):
    for name, value in [("BASIC_SCAN_TYPE_VERSION", "AWS_NATIVE"), ("REGISTRY_POLICY_SCOPE", "V2")]:
        out = ecr.put_account_setting(name=name, value=value)
        assert (out["name"], out["value"]) == (name, value)
        assert get(ecr, name)["value"] == value


def test_values_berth_does_not_have_are_refused_by_name(ecr):
    with pytest.raises(ClientError) as e:
        ecr.put_account_setting(name="BASIC_SCAN_TYPE_VERSION", value="CLAIR")
    code, message = error(e)
    assert code == "ValidationException"
    assert message.startswith("BASIC_SCAN_TYPE_VERSION cannot be set to CLAIR: ") and "scanner" in message
    with pytest.raises(ClientError) as e:
        ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V1")
    code, message = error(e)
    assert code == "ValidationException"
    assert message.startswith("REGISTRY_POLICY_SCOPE cannot be set to V1: ") and "every request" in message
    # Nothing was stored.
    assert get(ecr, "BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"
    assert get(ecr, "REGISTRY_POLICY_SCOPE")["value"] == "V2"


def test_bad_input(ecr, ecr_raw):
    for call in (
        lambda: ecr.get_account_setting(name="NO_SUCH_SETTING"),
        lambda: ecr.put_account_setting(name="NO_SUCH_SETTING", value="V2"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        code, message = error(e)
        assert code == "InvalidParameterException"
        assert "BASIC_SCAN_TYPE_VERSION, REGISTRY_POLICY_SCOPE, BLOB_MOUNTING" in message
    with pytest.raises(ClientError) as e:
        ecr.put_account_setting(name="BLOB_MOUNTING", value="enabled")
    assert error(e) == (
        "InvalidParameterException",
        "Invalid parameter at 'value' failed to satisfy constraint: 'Valid values for BLOB_MOUNTING: ENABLED, DISABLED'",
    )
    with pytest.raises(ClientError) as e:
        ecr_raw.get_account_setting(name="X" * 65)
    assert error(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecr_raw.put_account_setting(name="BLOB_MOUNTING")
    assert error(e) == ("InvalidParameterException", "Missing required parameter: value")


def test_iam_governs_both(berth):
    _, arn, none = berth.user_with_policy(None)
    for call in (lambda c: c.get_account_setting(name="BLOB_MOUNTING"),
                 lambda c: c.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")):
        with pytest.raises(ClientError) as e:
            call(none)
        code, message = error(e)
        assert code == "AccessDeniedException"
        assert arn in message
    _, _, reader = berth.user_with_policy(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "ecr:GetAccountSetting", "Resource": "*"}]}
    )
    assert reader.get_account_setting(name="BLOB_MOUNTING")["value"] == "ENABLED"
    with pytest.raises(ClientError) as e:
        reader.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
    assert "ecr:PutAccountSetting" in error(e)[1]


def upload(ecr, repo, data):
    up = ecr.initiate_layer_upload(repositoryName=repo)
    ecr.upload_layer_part(
        repositoryName=repo, uploadId=up["uploadId"], partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data
    )
    ecr.complete_layer_upload(repositoryName=repo, uploadId=up["uploadId"], layerDigests=[sha256(data)])


def start_mount(berth, ecr, repo, digest, source):
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, password = base64.b64decode(token).decode().split(":", 1)
    return requests.post(
        f"{berth.endpoint}/v2/{repo}/blobs/uploads/?mount={digest}&from={source}", auth=(user, password), timeout=30
    )


def test_blob_mounting_takes_effect(berth, ecr, name):
    src, a, b = name("src"), name("a"), name("b")
    for r in (src, a, b):
        ecr.create_repository(repositoryName=r)
    layer = os.urandom(3000)
    upload(ecr, src, layer)
    try:
        ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
        # Disabled: the mount is not made; an ordinary upload starts instead.
        r = start_mount(berth, ecr, a, sha256(layer), src)
        assert r.status_code == 202, r.text
        have = ecr.batch_check_layer_availability(repositoryName=a, layerDigests=[sha256(layer)])
        assert have["failures"] and not have["layers"], have
    finally:
        ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    assert get(ecr, "BLOB_MOUNTING")["value"] == "ENABLED"
    r = start_mount(berth, ecr, b, sha256(layer), src)
    assert r.status_code == 201, r.text
    have = ecr.batch_check_layer_availability(repositoryName=b, layerDigests=[sha256(layer)])
    assert have["layers"][0]["layerAvailability"] == "AVAILABLE"


def test_settings_are_per_registry(berth, ecr):
    out = berth.iam("create-account", "--account-id", SECOND_ACCOUNT)
    other = berth.client(out["AccessKeyId"], out["SecretAccessKey"])
    other.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
    try:
        assert get(other, "BLOB_MOUNTING")["value"] == "DISABLED"
        assert get(ecr, "BLOB_MOUNTING")["value"] == "ENABLED"
    finally:
        other.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")


def test_the_aws_cli(berth):
    out = berth.aws("ecr", "put-account-setting", "--name", "REGISTRY_POLICY_SCOPE", "--value", "V2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"name": "REGISTRY_POLICY_SCOPE", "value": "V2"}
    out = berth.aws("ecr", "get-account-setting", "--name", "BASIC_SCAN_TYPE_VERSION")
    assert json.loads(out.stdout) == {"name": "BASIC_SCAN_TYPE_VERSION", "value": "AWS_NATIVE"}
    out = berth.aws("ecr", "put-account-setting", "--name", "REGISTRY_POLICY_SCOPE", "--value", "V1")
    assert out.returncode != 0 and "ValidationException" in out.stderr, out.stderr

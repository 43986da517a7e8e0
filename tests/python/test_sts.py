"""STS GetCallerIdentity on Berth's endpoint, with boto3 and the aws CLI:
the Query protocol (form-encoded POST, XML answer), SigV4 for service `sts`,
STS's error codes, and the routing beside the ECR and KMS APIs.
"""

import json
import time

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
import pytest

from conftest import ACCOUNT, REGION, ROOT_KEY_ID, ROOT_SECRET

FORM = "application/x-www-form-urlencoded; charset=utf-8"


def sts(berth, key_id=ROOT_KEY_ID, secret=ROOT_SECRET):
    return berth.client(key_id, secret, service="sts")


def error(excinfo):
    e = excinfo.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def signed_post(berth, body, service="sts", content_type=FORM, key_id=ROOT_KEY_ID, secret=ROOT_SECRET):
    """A raw POST / signed with SigV4 for `service`, as botocore signs one."""
    req = AWSRequest(method="POST", url=berth.endpoint + "/", data=body, headers={"Content-Type": content_type})
    SigV4Auth(Credentials(key_id, secret), service, REGION).add_auth(req)
    return requests.post(berth.endpoint + "/", data=body, headers=dict(req.headers), timeout=30)


def test_the_root_key_is_the_account_root(berth):
    out = sts(berth).get_caller_identity()
    assert out["Account"] == ACCOUNT
    assert out["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert out["UserId"] == ACCOUNT


def test_a_user_without_any_policy_learns_who_it_is(berth):
    # No policy at all: GetCallerIdentity needs no permission, as in AWS.
    name, arn, _ = berth.user_with_policy(None)
    users = berth.iam("list-users", "--account-id", ACCOUNT)
    user_id = next(u["UserId"] for u in users["Users"] if u["UserName"] == name)
    key = berth.iam("create-access-key", "--account-id", ACCOUNT, "--user-name", name)["AccessKey"]
    out = sts(berth, key["AccessKeyId"], key["SecretAccessKey"]).get_caller_identity()
    assert out == {**out, "Account": ACCOUNT, "Arn": arn, "UserId": user_id}
    assert user_id and user_id != ACCOUNT


def test_the_aws_cli(berth):
    out = berth.aws("sts", "get-caller-identity")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"UserId": ACCOUNT, "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root"}


def test_the_answer_is_sts_xml(berth):
    r = signed_post(berth, "Action=GetCallerIdentity&Version=2011-06-15")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/xml")
    assert r.text.startswith('<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">')
    assert f"<Arn>arn:aws:iam::{ACCOUNT}:root</Arn>" in r.text
    assert r.headers["x-amzn-RequestId"] in r.text


def test_authentication_errors_are_stss(berth):
    with pytest.raises(ClientError) as e:
        sts(berth, "AKIAUNKNOWNKEY000000", ROOT_SECRET).get_caller_identity()
    assert error(e) == ("InvalidClientTokenId", "The security token included in the request is invalid.", 403)
    with pytest.raises(ClientError) as e:
        sts(berth, ROOT_KEY_ID, "wrong" + ROOT_SECRET[5:]).get_caller_identity()
    code, message, status = error(e)
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    assert "signature we calculated does not match" in message
    # A key signed for another service's scope is refused for its scope.
    r = signed_post(berth, "Action=GetCallerIdentity&Version=2011-06-15", service="ecr")
    assert r.status_code != 200
    # Unsigned.
    r = requests.post(berth.endpoint + "/", data="Action=GetCallerIdentity&Version=2011-06-15",
                      headers={"Content-Type": FORM}, timeout=30)
    assert r.status_code == 403


def test_a_deactivated_key_is_refused(berth):
    name, _, _ = berth.user_with_policy(None)
    key = berth.iam("create-access-key", "--account-id", ACCOUNT, "--user-name", name)["AccessKey"]
    client = sts(berth, key["AccessKeyId"], key["SecretAccessKey"])
    client.get_caller_identity()
    berth.iam("deactivate-access-key", "--access-key-id", key["AccessKeyId"])
    # The per-node key cache holds the old view for at most 5 s.
    deadline = time.monotonic() + 15
    while True:
        try:
            client.get_caller_identity()
        except ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidClientTokenId"
            break
        assert time.monotonic() < deadline, "the deactivated key still works"
        time.sleep(0.5)


def test_actions_and_versions_sts_does_not_have(berth):
    for body, code, message in [
        ("Action=AssumeRoleWithMagic&Version=2011-06-15", "InvalidAction",
         "Could not find operation AssumeRoleWithMagic for version 2011-06-15"),
        ("Action=GetCallerIdentity&Version=2010-05-08", "InvalidAction",
         "Could not find operation GetCallerIdentity for version 2010-05-08"),
        ("Version=2011-06-15", "MissingAction", "Missing Action"),
    ]:
        r = signed_post(berth, body)
        assert r.status_code == 400, (body, r.text)
        assert r.headers["Content-Type"].startswith("text/xml")
        assert f"<Code>{code}</Code>" in r.text and f"<Message>{message}</Message>" in r.text, r.text
        assert "<Type>Sender</Type>" in r.text


def test_the_body_is_bounded(berth):
    r = signed_post(berth, "Action=GetCallerIdentity&Version=2011-06-15&Pad=" + "x" * 5000)
    assert r.status_code == 413, r.text
    assert "<Code>RequestEntityTooLarge</Code>" in r.text


def test_the_other_apis_on_the_endpoint_are_unaffected(berth):
    assert berth.client().describe_repositories()["repositories"] == []
    assert berth.client(service="kms").list_keys()["Keys"] == []
    # A form-encoded request signed for ECR is not STS's: the ECR face refuses it.
    r = signed_post(berth, "Action=GetCallerIdentity&Version=2011-06-15", service="ecr")
    assert r.headers["Content-Type"] == "application/x-amz-json-1.1", r.headers
    # A JSON request signed for sts is not a Query request either.
    r = signed_post(berth, "{}", content_type="application/x-amz-json-1.1")
    assert r.headers["Content-Type"] == "application/x-amz-json-1.1", r.headers


def test_calls_are_counted_by_operation(berth):
    sts(berth).get_caller_identity()
    text = requests.get(berth.endpoint + "/metrics", timeout=10).text
    assert any('route="sts:GetCallerIdentity"' in line and 'status="200"' in line for line in text.splitlines()), text

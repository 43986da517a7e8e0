"""The SSM face (AmazonSSM on the same endpoint, SigV4 service `ssm`) with
boto3 and the aws CLI: GetParameter and GetParameters for the CDK bootstrap
version parameters that a bootstrapped environment holds, SSM's exceptions
for other names, selectors and ARNs, and IAM on the parameter ARNs."""

import json

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, ROOT_KEY_ID, ROOT_SECRET

# The version of the current CDK bootstrap template (src/parameters.rs).
BOOTSTRAP_VERSION = "32"
DEFAULT = "/cdk-bootstrap/hnb659fds/version"


def param_arn(name, account=ACCOUNT, region=REGION):
    return f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def ssm(berth):
    return berth.client(service="ssm")


@pytest.fixture(scope="module")
def ssm_raw(berth):
    return berth.client(service="ssm", validate=False)


def aws(berth, *args):
    return berth.aws("ssm", *args)


def test_get_parameter_answers_the_bootstrap_version(ssm):
    p = ssm.get_parameter(Name=DEFAULT)["Parameter"]
    assert p["Name"] == DEFAULT
    assert p["Value"] == BOOTSTRAP_VERSION
    assert p["Type"] == "String"
    assert p["Version"] == 1
    assert p["DataType"] == "text"
    assert p["ARN"] == param_arn(DEFAULT)
    assert "Selector" not in p
    # WithDecryption (the CDK CLI sends it) changes nothing for a String.
    assert ssm.get_parameter(Name=DEFAULT, WithDecryption=True)["Parameter"] == p
    # Any qualifier a bootstrap stack can have.
    for q in ["custom", "a_b-C9", "0123456789"]:
        name = f"/cdk-bootstrap/{q}/version"
        got = ssm.get_parameter(Name=name)["Parameter"]
        assert (got["Name"], got["Value"], got["ARN"]) == (name, BOOTSTRAP_VERSION, param_arn(name))


def test_the_version_satisfies_what_cdk_requires(ssm):
    """aws-cdk-lib's DefaultStackSynthesizer needs at least 6 to deploy (its
    CheckBootstrapVersion rule fails on 1..5), 8 for the lookup role and 22
    for session tags."""
    value = int(ssm.get_parameter(Name=DEFAULT)["Parameter"]["Value"])
    assert value >= 22


def test_by_arn_and_with_a_version_selector(ssm):
    p = ssm.get_parameter(Name=param_arn(DEFAULT))["Parameter"]
    assert p["Value"] == BOOTSTRAP_VERSION and p["ARN"] == param_arn(DEFAULT)
    s = ssm.get_parameter(Name=f"{DEFAULT}:1")["Parameter"]
    assert s["Selector"] == ":1" and s["Name"] == DEFAULT and s["Version"] == 1
    s = ssm.get_parameter(Name=f"{param_arn(DEFAULT)}:1")["Parameter"]
    assert s["Selector"] == ":1" and s["Value"] == BOOTSTRAP_VERSION
    for selector in [":2", ":prod"]:
        with pytest.raises(ClientError) as e:
            ssm.get_parameter(Name=DEFAULT + selector)
        assert code(e) == "ParameterVersionNotFound"
    # Another region's parameter is not here.
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name=param_arn(DEFAULT, region="eu-west-1"))
    assert code(e) == "ParameterNotFound"


def test_other_names_are_not_found(ssm):
    for name in [
        "/cdk-bootstrap/hnb659fds/other",
        "/cdk-bootstrap/qualifier-too-long/version",
        "/cdk-bootstrap/has.dot/version",
        "cdk-bootstrap/hnb659fds/version",
        "/app/db/password",
        "plain",
    ]:
        with pytest.raises(ClientError) as e:
            ssm.get_parameter(Name=name)
        assert code(e) == "ParameterNotFound", name
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_get_parameters_lists_found_and_invalid(ssm):
    names = ["/cdk-bootstrap/zzz/version", "/nope", DEFAULT, f"{DEFAULT}:7", "/cdk-bootstrap/aaa/version", DEFAULT]
    out = ssm.get_parameters(Names=names)
    got = [p["Name"] for p in out["Parameters"]]
    # Alphabetical, each once.
    assert got == ["/cdk-bootstrap/aaa/version", DEFAULT, "/cdk-bootstrap/zzz/version"]
    assert all(p["Value"] == BOOTSTRAP_VERSION and p["Type"] == "String" for p in out["Parameters"])
    assert sorted(out["InvalidParameters"]) == sorted(["/nope", f"{DEFAULT}:7"])
    none = ssm.get_parameters(Names=["/x", "/y"])
    assert none["Parameters"] == [] and sorted(none["InvalidParameters"]) == ["/x", "/y"]


def test_bad_input_is_a_validation_error(ssm_raw):
    for call in [
        lambda: ssm_raw.get_parameter(Name=""),
        lambda: ssm_raw.get_parameter(Name="/" + "a" * 2048),
        lambda: ssm_raw.get_parameters(Names=[]),
        lambda: ssm_raw.get_parameters(Names=[f"/p{i}" for i in range(11)]),
        lambda: ssm_raw.get_parameter(),
    ]:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "ValidationException"


def test_unsupported_operations_are_refused(ssm):
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name="/mine", Value="v", Type="String")
    assert code(e) == "UnknownOperationException"


def test_requests_must_be_signed_for_ssm(berth):
    """An SSM call signed for another service's scope is refused."""
    body = json.dumps({"Name": DEFAULT})
    for service, ok in [("ssm", True), ("ecr", False), ("kms", False)]:
        req = AWSRequest(
            method="POST",
            url=berth.endpoint + "/",
            data=body,
            headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.GetParameter"},
        )
        SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), service, REGION).add_auth(req)
        r = requests.post(req.url, data=body, headers=dict(req.headers), timeout=30)
        if ok:
            assert r.status_code == 200, r.text
            assert r.json()["Parameter"]["Value"] == BOOTSTRAP_VERSION
        else:
            assert r.status_code == 400, r.text
            assert r.json()["__type"] == "InvalidSignatureException"
    r = requests.post(berth.endpoint + "/", data=body, headers={"X-Amz-Target": "AmazonSSM.GetParameter"}, timeout=30)
    assert r.status_code == 403 and r.json()["__type"] == "MissingAuthenticationTokenException"


def ssm_user(berth, policy):
    _, arn, client = berth.user_with_policy(policy, service="ssm")
    return arn, client


def test_iam_authorizes_each_parameter_arn(berth):
    arn, denied = ssm_user(berth, None)
    with pytest.raises(ClientError) as e:
        denied.get_parameter(Name=DEFAULT)
    assert code(e) == "AccessDeniedException"
    msg = e.value.response["Error"]["Message"]
    assert arn in msg and "ssm:GetParameter" in msg and param_arn(DEFAULT) in msg
    # Authorization comes before existence: a missing name is not revealed.
    with pytest.raises(ClientError) as e:
        denied.get_parameter(Name="/nope")
    assert code(e) == "AccessDeniedException"

    _, cdk = ssm_user(berth, {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/cdk-bootstrap/hnb659fds/*",
        }],
    })
    assert cdk.get_parameter(Name=DEFAULT)["Parameter"]["Value"] == BOOTSTRAP_VERSION
    assert cdk.get_parameter(Name=param_arn(DEFAULT))["Parameter"]["Value"] == BOOTSTRAP_VERSION
    for name in ["/cdk-bootstrap/other/version", "/nope"]:
        with pytest.raises(ClientError) as e:
            cdk.get_parameter(Name=name)
        assert code(e) == "AccessDeniedException", name
    # GetParameters is an action of its own.
    with pytest.raises(ClientError) as e:
        cdk.get_parameters(Names=[DEFAULT])
    assert code(e) == "AccessDeniedException"
    assert "ssm:GetParameters" in e.value.response["Error"]["Message"]

    _, both = ssm_user(berth, {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ssm:GetParameters", "Resource": "arn:aws:ssm:*:*:parameter/cdk-bootstrap/*"}],
    })
    out = both.get_parameters(Names=[DEFAULT, "/cdk-bootstrap/x/nope"])
    assert [p["Name"] for p in out["Parameters"]] == [DEFAULT]
    assert out["InvalidParameters"] == ["/cdk-bootstrap/x/nope"]
    # One name it may not read refuses the whole call.
    with pytest.raises(ClientError) as e:
        both.get_parameters(Names=[DEFAULT, "/app/secret"])
    assert code(e) == "AccessDeniedException"

    # A Deny wins, even for the account's own bootstrap parameter.
    _, deny = ssm_user(berth, {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "ssm:GetParameter", "Resource": param_arn(DEFAULT)},
        ],
    })
    with pytest.raises(ClientError) as e:
        deny.get_parameter(Name=DEFAULT)
    assert code(e) == "AccessDeniedException"
    assert deny.get_parameter(Name="/cdk-bootstrap/other/version")["Parameter"]["Value"] == BOOTSTRAP_VERSION


def test_another_accounts_parameter_is_not_shared(ssm):
    """Another account's parameter needs sharing (which Berth has not):
    even the root of this account may not read it."""
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name=param_arn(DEFAULT, account="210987654321"))
    assert code(e) == "AccessDeniedException"


def test_aws_cli(berth):
    out = aws(berth, "get-parameter", "--name", DEFAULT)
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)["Parameter"]
    assert (p["Name"], p["Value"], p["Type"]) == (DEFAULT, BOOTSTRAP_VERSION, "String")
    out = aws(berth, "get-parameter", "--name", DEFAULT, "--query", "Parameter.Value")
    assert out.returncode == 0 and json.loads(out.stdout) == BOOTSTRAP_VERSION, out.stderr
    out = aws(berth, "get-parameters", "--names", DEFAULT, "/missing")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [p["Name"] for p in got["Parameters"]] == [DEFAULT] and got["InvalidParameters"] == ["/missing"]
    out = aws(berth, "get-parameter", "--name", "/missing")
    # 255 from the aws CLI v1 (254 from v2) for a service error.
    assert out.returncode in (254, 255) and "ParameterNotFound" in out.stderr, (out.returncode, out.stderr)


def test_calls_are_counted_by_operation(berth, ssm):
    ssm.get_parameters(Names=[DEFAULT])
    with pytest.raises(ClientError):
        ssm.get_parameter(Name="/nope")
    lines = requests.get(berth.endpoint + "/metrics", timeout=10).text.splitlines()
    assert any('route="ssm:GetParameters"' in line and 'status="200"' in line for line in lines)
    assert any('route="ssm:GetParameter"' in line and 'status="400"' in line for line in lines)

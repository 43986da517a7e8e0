"""The CloudFormation-compatible endpoint end to end, with the unmodified aws
CLI (`aws cloudformation deploy`, the stack and change-set commands, the
waiters) and boto3, against AWS CloudFormation's documented behaviour: the
guides' template (YAML, short-form tags) created, updated, left unchanged and
deleted with Retain and Delete; a CDK-synthesized EcrStack (its
BootstrapVersion SSM parameter and CheckBootstrapVersion rule); Parameters,
Conditions, Mappings, the intrinsic functions and pseudo-parameters;
replacement; failure and rollback; bad input; IAM, with the stack acting as
its caller. Every check of a result reads ECR itself."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from botocore.exceptions import ClientError, WaiterError

from conftest import ACCOUNT, REGION, REPO_ROOT
from test_ecr_api import new_image, put

# ---- helpers -------------------------------------------------------------------------------------

FAST = {"Delay": 1, "MaxAttempts": 180}


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def message(excinfo):
    return excinfo.value.response["Error"]["Message"]


def repo_arn(name, account=ACCOUNT):
    return f"arn:aws:ecr:{REGION}:{account}:repository/{name}"


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def aws(berth, *args, **kw):
    """`aws cloudformation <args>` against the server; the CompletedProcess
    (`deploy` and the waiters poll: they may take a while)."""
    return berth.aws("cloudformation", *args, **{"timeout": 600, **kw})


def ok(out):
    """The JSON output of a command that must have succeeded (`deploy` and
    `wait` print text or nothing: their output is returned as it is)."""
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    if not out.stdout.strip():
        return {}
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return out.stdout


def failed(out, *needles):
    """A command that must have failed (the aws CLI v1 exits 255 on a
    service error, v2 254), saying each of `needles`."""
    said = out.stdout + out.stderr
    assert out.returncode in (254, 255), f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr}"
    for n in needles:
        assert n in said, f"{n!r} not in:\n{said}"
    return said


def write(tmp_path, text, suffix=".yaml"):
    path = tmp_path / f"t-{uuid.uuid4().hex[:8]}{suffix}"
    path.write_text(text if isinstance(text, str) else json.dumps(text, indent=2))
    return path


# When each stack's last `deploy` ended (epoch seconds, whole).
_last_deploy = {}


def cli_deploy(berth, path, stack, *extra, **kw):
    """`aws cloudformation deploy --template-file PATH --stack-name STACK`.
    The CLI names its change set `awscli-cloudformation-package-deploy-<epoch
    second>`, and CloudFormation keeps failed (empty) and executed change
    sets, so a second deploy of the same stack within the same second would
    collide with the first one's: such a deploy starts in the next second."""
    last = _last_deploy.get(stack)
    if last is not None and time.time() < last + 1:
        time.sleep(last + 1 - time.time())
    try:
        return aws(berth, "deploy", "--template-file", str(path), "--stack-name", stack, *extra, **kw)
    finally:
        _last_deploy[stack] = int(time.time())


def deploy(berth, tmp_path, stack, template, *extra, **kw):
    """`aws cloudformation deploy` of `template` (text, or a dict written as JSON)."""
    path = write(tmp_path, template, ".json" if isinstance(template, dict) else ".yaml")
    return cli_deploy(berth, path, stack, *extra, **kw)


def stack_of(cfn, name):
    return cfn.describe_stacks(StackName=name)["Stacks"][0]


def outputs(stack):
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def params(stack):
    return {p["ParameterKey"]: p for p in stack.get("Parameters", [])}


def events(cfn, stack):
    """The stack's events, oldest first."""
    got, token = [], None
    while True:
        page = cfn.describe_stack_events(StackName=stack, **({"NextToken": token} if token else {}))
        got += page["StackEvents"]
        token = page.get("NextToken")
        if not token:
            return list(reversed(got))


def resources(cfn, stack):
    return {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]}


def wait(cfn, waiter, **kw):
    cfn.get_waiter(waiter).wait(WaiterConfig=FAST, **kw)


def wait_failed(cfn, waiter, **kw):
    """Run a waiter that must reach a failure state; the last DescribeStacks answer."""
    with pytest.raises(WaiterError) as e:
        wait(cfn, waiter, **kw)
    return e.value.last_response


def create(cfn, stack, template, parameters=(), **kw):
    body = template if isinstance(template, str) else json.dumps(template)
    r = cfn.create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in dict(parameters).items()],
        **kw,
    )
    return r["StackId"]


def delete(cfn, stack):
    cfn.delete_stack(StackName=stack)
    wait(cfn, "stack_delete_complete", StackName=stack)


def repo(ecr, name):
    """The repository `name` as DescribeRepositories shows it, or None."""
    try:
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ecr.exceptions.RepositoryNotFoundException:
        return None


def tags(ecr, name):
    """The repository's tags, less any `aws:` ones CloudFormation may add."""
    got = ecr.list_tags_for_resource(resourceArn=repo_arn(name))["tags"]
    return {t["Key"]: t["Value"] for t in got if not t["Key"].startswith("aws:")}


def lifecycle(ecr, name):
    try:
        return json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
    except ecr.exceptions.LifecyclePolicyNotFoundException:
        return None


def repo_policy(ecr, name):
    try:
        return json.loads(ecr.get_repository_policy(repositoryName=name)["policyText"])
    except ecr.exceptions.RepositoryPolicyNotFoundException:
        return None


def keep(n):
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"keep {n}",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": n},
                "action": {"type": "expire"},
            }
        ]
    }


@pytest.fixture(scope="module")
def cfn(berth):
    return berth.client(service="cloudformation")


@pytest.fixture(scope="module")
def cfn_raw(berth):
    return berth.client(service="cloudformation", validate=False)


STACK_ARN_PREFIX = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/"

# ---- the guides' template --------------------------------------------------------------------------

# The guides' template, in pieces so that the update can leave one out.
GUIDE_POLICY = """\
      RepositoryPolicyText:
        Version: '2012-10-17'
        Statement:
          - Sid: AllowPull
            Effect: Allow
            Principal:
              AWS: !Sub 'arn:aws:iam::${AWS::AccountId}:root'
            Action:
              - ecr:BatchGetImage
              - ecr:GetDownloadUrlForLayer
"""
GUIDE_TAGS = """\
      Tags:
        - Key: team
          Value: !Ref Team
"""
GUIDE_OUTPUTS = """\
Outputs:
  RepositoryUri:
    Description: Where to push
    Value: !GetAtt Repo.RepositoryUri
  Arn:
    Value: !GetAtt Repo.Arn
"""
GUIDE_HEAD = """\
AWSTemplateFormatVersion: '2010-09-09'
Description: The todo service's container repository
Parameters:
  RepositoryName:
    Type: String
    Default: todo-service
  TagMutability:
    Type: String
    Default: MUTABLE
    AllowedValues: [MUTABLE, IMMUTABLE]
  KeepImages:
    Type: Number
    Default: 10
  Team:
    Type: String
    Default: todo
Resources:
  Repo:
    Type: AWS::ECR::Repository
    DeletionPolicy: Retain
    UpdateReplacePolicy: Retain
    Properties:
      RepositoryName: !Ref RepositoryName
      ImageTagMutability: !Ref TagMutability
      ImageScanningConfiguration:
        ScanOnPush: true
      LifecyclePolicy:
        LifecyclePolicyText: !Sub '{"rules":[{"rulePriority":1,"description":"keep ${KeepImages}","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":${KeepImages}},"action":{"type":"expire"}}]}'
"""
GUIDE = GUIDE_HEAD + GUIDE_POLICY + GUIDE_TAGS + GUIDE_OUTPUTS

# The guide's repository changed by hand-editing the template: no repository
# policy, other tags.
GUIDE_EDITED = GUIDE_HEAD + """\
      Tags:
        - Key: owner
          Value: !Sub '${Team}-owners'
        - Key: stack
          Value: !Ref AWS::StackName
""" + GUIDE_OUTPUTS


def test_guide_template_create_update_no_change_and_delete_with_retain(berth, cfn, ecr, tmp_path):
    stack, name = unique("guide"), unique("todo-service")
    out = deploy(berth, tmp_path, stack, GUIDE, "--parameter-overrides", f"RepositoryName={name}")
    ok(out)
    assert f"Successfully created/updated stack - {stack}" in out.stdout

    s = stack_of(cfn, stack)
    assert s["StackStatus"] == "CREATE_COMPLETE"
    assert s["StackName"] == stack and s["StackId"].startswith(STACK_ARN_PREFIX + stack + "/")
    assert s["Description"] == "The todo service's container repository"
    r = repo(ecr, name)
    assert r is not None, "deploy created no repository"
    assert outputs(s) == {"RepositoryUri": r["repositoryUri"], "Arn": repo_arn(name)}
    assert r["imageTagMutability"] == "MUTABLE"
    assert r["imageScanningConfiguration"] == {"scanOnPush": True}
    assert lifecycle(ecr, name) == keep(10)
    policy = repo_policy(ecr, name)
    [statement] = policy["Statement"]
    assert statement["Sid"] == "AllowPull" and statement["Effect"] == "Allow"
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert sorted(statement["Action"]) == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    assert tags(ecr, name) == {"team": "todo"}
    res = resources(cfn, stack)
    assert res["Repo"]["PhysicalResourceId"] == name
    assert res["Repo"]["ResourceType"] == "AWS::ECR::Repository"
    assert res["Repo"]["ResourceStatus"] == "CREATE_COMPLETE"

    # Update through parameters: mutability, lifecycle policy, tags.
    ok(deploy(berth, tmp_path, stack, GUIDE, "--parameter-overrides", "TagMutability=IMMUTABLE", "KeepImages=5", "Team=platform"))
    s = stack_of(cfn, stack)
    assert s["StackStatus"] == "UPDATE_COMPLETE"
    assert params(s)["RepositoryName"]["ParameterValue"] == name
    assert params(s)["TagMutability"]["ParameterValue"] == "IMMUTABLE"
    assert repo(ecr, name)["imageTagMutability"] == "IMMUTABLE"
    assert lifecycle(ecr, name) == keep(5)
    assert tags(ecr, name) == {"team": "platform"}

    # Update through the template: the repository policy removed, tags replaced.
    ok(deploy(berth, tmp_path, stack, GUIDE_EDITED))
    assert stack_of(cfn, stack)["StackStatus"] == "UPDATE_COMPLETE"
    assert repo_policy(ecr, name) is None
    assert tags(ecr, name) == {"owner": "platform-owners", "stack": stack}
    assert repo(ecr, name)["imageTagMutability"] == "IMMUTABLE"
    assert lifecycle(ecr, name) == keep(5)

    # The same again: nothing to deploy.
    failed(deploy(berth, tmp_path, stack, GUIDE_EDITED), f"No changes to deploy. Stack {stack} is up to date")
    out = deploy(berth, tmp_path, stack, GUIDE_EDITED, "--no-fail-on-empty-changeset")
    assert out.returncode == 0, out.stderr
    assert f"No changes to deploy. Stack {stack} is up to date" in out.stdout
    assert stack_of(cfn, stack)["StackStatus"] == "UPDATE_COMPLETE"

    # Delete with DeletionPolicy Retain: the stack goes, the repository stays.
    stack_id = stack_of(cfn, stack)["StackId"]
    ok(aws(berth, "delete-stack", "--stack-name", stack))
    ok(aws(berth, "wait", "stack-delete-complete", "--stack-name", stack))
    failed(aws(berth, "describe-stacks", "--stack-name", stack), "ValidationError", f"Stack with id {stack} does not exist")
    with pytest.raises(ClientError) as e:
        cfn.describe_stacks(StackName=stack)
    assert code(e) == "ValidationError" and message(e) == f"Stack with id {stack} does not exist"
    # A deleted stack is still described by its id.
    gone = stack_of(cfn, stack_id)
    assert gone["StackStatus"] == "DELETE_COMPLETE" and "DeletionTime" in gone
    retained = events(cfn, stack_id)
    assert any(e["LogicalResourceId"] == "Repo" and e["ResourceStatus"] == "DELETE_SKIPPED" for e in retained)
    assert repo(ecr, name) is not None
    assert tags(ecr, name) == {"owner": "platform-owners", "stack": stack}
    ecr.delete_repository(repositoryName=name, force=True)


DELETE_POLICY = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Parameters": {"Name": {"Type": "String"}},
    "Resources": {
        "Repo": {
            "Type": "AWS::ECR::Repository",
            "DeletionPolicy": "Delete",
            "Properties": {"RepositoryName": {"Ref": "Name"}, "EmptyOnDelete": True},
        }
    },
    "Outputs": {"Uri": {"Value": {"Fn::GetAtt": ["Repo", "RepositoryUri"]}}},
}


def test_delete_policy_delete_with_empty_on_delete_removes_a_repository_with_images(berth, cfn, ecr, tmp_path):
    stack, name = unique("delete"), unique("with-images")
    path = write(tmp_path, DELETE_POLICY, ".json")
    out = ok(aws(berth, "create-stack", "--stack-name", stack, "--template-body", f"file://{path}", "--parameters", f"ParameterKey=Name,ParameterValue={name}"))
    assert out["StackId"].startswith(STACK_ARN_PREFIX + stack + "/")
    ok(aws(berth, "wait", "stack-create-complete", "--stack-name", stack))
    img = new_image(ecr, name)
    put(ecr, name, img, tag="v1")
    assert ecr.describe_images(repositoryName=name)["imageDetails"]
    ok(aws(berth, "delete-stack", "--stack-name", stack))
    ok(aws(berth, "wait", "stack-delete-complete", "--stack-name", stack))
    assert repo(ecr, name) is None


def test_delete_without_empty_on_delete_fails_on_a_repository_with_images(cfn, ecr):
    """A repository with images cannot be deleted unless EmptyOnDelete is
    set: DELETE_FAILED, the repository and the stack stay."""
    stack, name = unique("delete-failed"), unique("kept")
    t = json.loads(json.dumps(DELETE_POLICY))
    del t["Resources"]["Repo"]["Properties"]["EmptyOnDelete"]
    create(cfn, stack, t, {"Name": name})
    wait(cfn, "stack_create_complete", StackName=stack)
    put(ecr, name, new_image(ecr, name), tag="v1")
    cfn.delete_stack(StackName=stack)
    last = wait_failed(cfn, "stack_delete_complete", StackName=stack)
    assert last["Stacks"][0]["StackStatus"] == "DELETE_FAILED"
    [failure] = [e for e in events(cfn, stack) if e["ResourceStatus"] == "DELETE_FAILED" and e["LogicalResourceId"] == "Repo"]
    assert failure.get("ResourceStatusReason")
    assert repo(ecr, name) is not None
    # Retrying once the repository is empty deletes it.
    ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    delete(cfn, stack)
    assert repo(ecr, name) is None


# ---- CDK -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cdk_templates(tmp_path_factory):
    """The CDK app tests/cdk/ecr_stack.py synthesized once per test session
    (Python's `app.synth()` through jsii and Node.js, no CDK CLI): its two
    variants' templates."""
    out = tmp_path_factory.mktemp("cdk.out")
    env = dict(os.environ, CDK_OUTDIR=str(out))
    r = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "cdk" / "ecr_stack.py"), "guide", "update", "legacy"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, f"synth failed (pip install aws-cdk-lib constructs; needs Node.js):\n{r.stderr}"
    return {v: out / v / "EcrStack.template.json" for v in ("guide", "update", "legacy")}


def repository_of(template):
    """The logical id of a synthesized template's one repository."""
    [logical] = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::ECR::Repository"]
    return logical


def test_cdk_synthesized_stack_deploys_updates_and_deletes(berth, cfn, ecr, cdk_templates, tmp_path):
    guide = json.loads(cdk_templates["guide"].read_text())
    # What the default synthesizer emits, as the CLI would deploy it.
    assert guide["Parameters"]["BootstrapVersion"]["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert guide["Parameters"]["BootstrapVersion"]["Default"] == "/cdk-bootstrap/hnb659fds/version"
    assert "CheckBootstrapVersion" in guide["Rules"]
    logical = repository_of(guide)
    resource = guide["Resources"][logical]
    assert resource["DeletionPolicy"] == "Retain"
    # `cdk synth` adds its metadata resource, under a condition on the region.
    assert guide["Resources"]["CDKMetadata"]["Type"] == "AWS::CDK::Metadata"
    assert guide["Resources"]["CDKMetadata"]["Condition"] == "CDKMetadataAvailable"
    name = resource["Properties"]["RepositoryName"]
    assert name == "todo-service"

    stack = unique("EcrStack")
    ok(cli_deploy(berth, cdk_templates["guide"], stack))
    s = stack_of(cfn, stack)
    assert s["StackStatus"] == "CREATE_COMPLETE"
    bootstrap = params(s)["BootstrapVersion"]
    assert bootstrap["ParameterValue"] == "/cdk-bootstrap/hnb659fds/version"
    assert bootstrap["ResolvedValue"] == "32"
    # CDK builds the URI from the ARN and AWS::URLSuffix.
    assert outputs(s) == {
        "RepositoryUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}",
        "RepositoryArn": repo_arn(name),
    }
    res = resources(cfn, stack)
    assert res[logical]["PhysicalResourceId"] == name
    assert res["CDKMetadata"]["ResourceType"] == "AWS::CDK::Metadata"
    assert res["CDKMetadata"]["ResourceStatus"] == "CREATE_COMPLETE"
    assert repo(ecr, name)["imageTagMutability"] == "MUTABLE"
    assert lifecycle(ecr, name) is None

    # The second synth: immutable tags, a lifecycle rule, a tag, DESTROY.
    ok(cli_deploy(berth, cdk_templates["update"], stack))
    assert stack_of(cfn, stack)["StackStatus"] == "UPDATE_COMPLETE"
    assert repo(ecr, name)["imageTagMutability"] == "IMMUTABLE"
    assert lifecycle(ecr, name) == {
        "rules": [
            {
                "rulePriority": 1,
                "description": "keep 5",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
                "action": {"type": "expire"},
            }
        ]
    }
    assert tags(ecr, name) == {"team": "platform"}
    failed(cli_deploy(berth, cdk_templates["update"], stack), "No changes to deploy")

    # RemovalPolicy.DESTROY with empty_on_delete: the stack's deletion takes the images too.
    put(ecr, name, new_image(ecr, name), tag="v1")
    delete(cfn, stack)
    assert repo(ecr, name) is None


def test_cdk_bootstrap_rule_and_ssm_parameters(cfn, ecr, cdk_templates):
    """The CheckBootstrapVersion rule is evaluated: a rule the resolved
    version fails refuses the stack with its AssertDescription; an SSM
    parameter that does not exist refuses it too. Nothing is created."""
    t = json.loads(cdk_templates["guide"].read_text())
    name = unique("cdk-rule")
    logical = repository_of(t)
    t["Resources"][logical]["Properties"]["RepositoryName"] = name
    assertion = t["Rules"]["CheckBootstrapVersion"]["Assertions"][0]
    # As a synthesizer requiring version 33 would write it.
    assertion["Assert"]["Fn::Not"][0]["Fn::Contains"][0] = [str(v) for v in range(1, 33)]
    assertion["AssertDescription"] = "CDK bootstrap stack version 33 required. Please run 'cdk bootstrap' with a recent version of the CDK CLI."
    stack = unique("cdk-rule")
    with pytest.raises(ClientError) as e:
        create(cfn, stack, t)
    assert code(e) == "ValidationError"
    assert "CDK bootstrap stack version 33 required" in message(e)
    with pytest.raises(ClientError) as e:
        cfn.create_change_set(StackName=stack, ChangeSetName="cs", ChangeSetType="CREATE", TemplateBody=json.dumps(t))
    assert code(e) == "ValidationError" and "CDK bootstrap stack version 33 required" in message(e)

    t = json.loads(cdk_templates["guide"].read_text())
    t["Resources"][logical]["Properties"]["RepositoryName"] = name
    t["Parameters"]["BootstrapVersion"]["Default"] = "/cdk-bootstrap/no_such.q/version"
    with pytest.raises(ClientError) as e:
        create(cfn, stack, t)
    assert code(e) == "ValidationError"
    assert "Unable to fetch parameters [/cdk-bootstrap/no_such.q/version] from parameter store for this account" in message(e)
    with pytest.raises(ClientError) as e:
        cfn.describe_stacks(StackName=stack)
    assert code(e) == "ValidationError"
    assert repo(ecr, name) is None

    # A custom qualifier resolves like the default one.
    t["Parameters"]["BootstrapVersion"]["Default"] = "/cdk-bootstrap/myqual/version"
    create(cfn, stack, t)
    wait(cfn, "stack_create_complete", StackName=stack)
    assert params(stack_of(cfn, stack))["BootstrapVersion"]["ResolvedValue"] == "32"
    assert repo(ecr, name) is not None
    delete(cfn, stack)
    # CDK's default removal policy is Retain.
    assert repo(ecr, name) is not None
    ecr.delete_repository(repositoryName=name, force=True)


def test_cdk_legacy_synthesizer_template_deploys(berth, cfn, ecr, cdk_templates, tmp_path):
    """LegacyStackSynthesizer: no bootstrap parameter or rule, the same repository."""
    t = json.loads(cdk_templates["legacy"].read_text())
    assert "BootstrapVersion" not in t.get("Parameters", {}) and "Rules" not in t
    logical = repository_of(t)
    name = unique("cdk-legacy")
    t["Resources"][logical]["Properties"]["RepositoryName"] = name
    stack = unique("EcrStackLegacy")
    ok(deploy(berth, tmp_path, stack, t))
    assert outputs(stack_of(cfn, stack))["RepositoryUri"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}"
    assert repo(ecr, name)["imageTagMutability"] == "MUTABLE"
    delete(cfn, stack)
    assert repo(ecr, name) is not None
    ecr.delete_repository(repositoryName=name)


# ---- the stack API ---------------------------------------------------------------------------------

SMALL = """\
Description: one repository
Parameters:
  Name:
    Type: String
    Description: the repository's name
  Mutability:
    Type: String
    Default: MUTABLE
    AllowedValues: [MUTABLE, IMMUTABLE]
    Description: tag mutability
  Token:
    Type: String
    NoEcho: true
    Default: not-a-secret
Resources:
  Repo:
    Type: AWS::ECR::Repository
    Properties:
      RepositoryName: !Ref Name
      ImageTagMutability: !Ref Mutability
Outputs:
  Name:
    Value: !Ref Repo
    Export:
      Name: !Sub '${AWS::StackName}-name'
"""


def test_create_update_describe_list_and_templates(berth, cfn, ecr):
    stack, name = unique("api"), unique("api-repo")
    stack_id = create(cfn, stack, SMALL, {"Name": name}, Tags=[{"Key": "cost-center", "Value": "42"}])
    assert stack_id.startswith(STACK_ARN_PREFIX + stack + "/")
    wait(cfn, "stack_create_complete", StackName=stack)
    s = stack_of(cfn, stack)
    assert s["StackId"] == stack_id and s["StackStatus"] == "CREATE_COMPLETE"
    assert s["Tags"] == [{"Key": "cost-center", "Value": "42"}]
    p = params(s)
    assert p["Name"]["ParameterValue"] == name
    assert p["Mutability"]["ParameterValue"] == "MUTABLE"
    assert p["Token"]["ParameterValue"] == "****"
    [o] = s["Outputs"]
    assert (o["OutputKey"], o["OutputValue"], o["ExportName"]) == ("Name", name, f"{stack}-name")
    # By id as by name.
    assert stack_of(cfn, stack_id)["StackName"] == stack
    assert any(x["StackName"] == stack for x in cfn.describe_stacks()["Stacks"])

    ev = events(cfn, stack)
    assert ev[0]["LogicalResourceId"] == stack and ev[0]["ResourceType"] == "AWS::CloudFormation::Stack"
    assert ev[0]["ResourceStatus"] == "CREATE_IN_PROGRESS" and ev[0]["PhysicalResourceId"] == stack_id
    assert ev[-1]["LogicalResourceId"] == stack and ev[-1]["ResourceStatus"] == "CREATE_COMPLETE"
    repo_events = [(e["ResourceStatus"], e.get("PhysicalResourceId")) for e in ev if e["LogicalResourceId"] == "Repo"]
    assert repo_events[0][0] == "CREATE_IN_PROGRESS" and repo_events[-1] == ("CREATE_COMPLETE", name)
    assert all(e["StackId"] == stack_id and e["StackName"] == stack and e["EventId"] for e in ev)
    cli_events = ok(aws(berth, "describe-stack-events", "--stack-name", stack))["StackEvents"]
    assert [e["EventId"] for e in cli_events] == [e["EventId"] for e in reversed(ev)]

    res = ok(aws(berth, "describe-stack-resources", "--stack-name", stack))["StackResources"]
    assert [(r["LogicalResourceId"], r["PhysicalResourceId"], r["ResourceType"], r["ResourceStatus"]) for r in res] == [
        ("Repo", name, "AWS::ECR::Repository", "CREATE_COMPLETE")
    ]
    one = cfn.describe_stack_resources(StackName=stack, LogicalResourceId="Repo")["StackResources"]
    assert len(one) == 1 and one[0]["StackName"] == stack

    # Templates: the original text back, the summary, validation.
    assert cfn.get_template(StackName=stack)["TemplateBody"] == SMALL
    assert ok(aws(berth, "get-template", "--stack-name", stack))["TemplateBody"] == SMALL
    summary = cfn.get_template_summary(StackName=stack)
    assert summary["Description"] == "one repository"
    assert summary["ResourceTypes"] == ["AWS::ECR::Repository"]
    sp = {x["ParameterKey"]: x for x in summary["Parameters"]}
    assert set(sp) == {"Name", "Mutability", "Token"}
    assert sp["Mutability"]["DefaultValue"] == "MUTABLE" and sp["Mutability"]["ParameterType"] == "String"
    assert sp["Mutability"]["ParameterConstraints"]["AllowedValues"] == ["MUTABLE", "IMMUTABLE"]
    assert sp["Mutability"]["Description"] == "tag mutability" and sp["Mutability"]["NoEcho"] is False
    assert sp["Token"]["NoEcho"] is True
    assert "DefaultValue" not in sp["Name"]
    assert cfn.get_template_summary(TemplateBody=SMALL)["Parameters"] == summary["Parameters"]
    v = cfn.validate_template(TemplateBody=SMALL)
    assert v["Description"] == "one repository"
    vp = {x["ParameterKey"]: x for x in v["Parameters"]}
    assert vp["Mutability"]["DefaultValue"] == "MUTABLE" and vp["Token"]["NoEcho"] is True
    ok(aws(berth, "validate-template", "--template-body", SMALL))

    # update-stack, keeping a previous value.
    cfn.update_stack(
        StackName=stack,
        TemplateBody=SMALL,
        Parameters=[
            {"ParameterKey": "Name", "UsePreviousValue": True},
            {"ParameterKey": "Mutability", "ParameterValue": "IMMUTABLE"},
        ],
    )
    wait(cfn, "stack_update_complete", StackName=stack)
    s = stack_of(cfn, stack)
    assert s["StackStatus"] == "UPDATE_COMPLETE" and "LastUpdatedTime" in s
    assert repo(ecr, name)["imageTagMutability"] == "IMMUTABLE"
    with pytest.raises(ClientError) as e:
        cfn.update_stack(
            StackName=stack,
            TemplateBody=SMALL,
            Parameters=[{"ParameterKey": "Name", "UsePreviousValue": True}, {"ParameterKey": "Mutability", "UsePreviousValue": True}],
        )
    assert code(e) == "ValidationError" and message(e) == "No updates are to be performed."
    failed(
        aws(berth, "update-stack", "--stack-name", stack, "--use-previous-template",
            "--parameters", "ParameterKey=Name,UsePreviousValue=true", "ParameterKey=Mutability,UsePreviousValue=true"),
        "No updates are to be performed.",
    )
    # A second stack of the same name is refused.
    with pytest.raises(ClientError) as e:
        create(cfn, stack, SMALL, {"Name": name})
    assert code(e) == "AlreadyExistsException"
    assert message(e) == f"Stack [{stack}] already exists"

    # list-stacks, with a status filter.
    listed = ok(aws(berth, "list-stacks", "--stack-status-filter", "UPDATE_COMPLETE"))["StackSummaries"]
    mine = [x for x in listed if x["StackName"] == stack]
    assert len(mine) == 1 and mine[0]["StackId"] == stack_id and mine[0]["StackStatus"] == "UPDATE_COMPLETE"
    assert all(x["StackStatus"] == "UPDATE_COMPLETE" for x in listed)
    assert not any(x["StackName"] == stack for x in cfn.list_stacks(StackStatusFilter=["CREATE_COMPLETE"])["StackSummaries"])

    delete(cfn, stack)
    assert repo(ecr, name) is None
    deleted = cfn.list_stacks(StackStatusFilter=["DELETE_COMPLETE"])["StackSummaries"]
    assert any(x["StackId"] == stack_id and "DeletionTime" in x for x in deleted)
    assert not any(x["StackName"] == stack for x in cfn.describe_stacks()["Stacks"])
    # Deleting a stack that does not exist succeeds and does nothing.
    cfn.delete_stack(StackName=stack)


def test_stack_tags_go_onto_its_resources(cfn, ecr):
    """CloudFormation propagates a stack's tags to the resources it creates
    that take tags, and follows an update of them."""
    stack, name = unique("tagged"), unique("tagged-repo")
    create(cfn, stack, SMALL, {"Name": name}, Tags=[{"Key": "cost-center", "Value": "42"}])
    wait(cfn, "stack_create_complete", StackName=stack)
    assert tags(ecr, name) == {"cost-center": "42"}
    cfn.update_stack(
        StackName=stack, UsePreviousTemplate=True, Tags=[{"Key": "cost-center", "Value": "43"}],
        Parameters=[{"ParameterKey": "Name", "UsePreviousValue": True}],
    )
    wait(cfn, "stack_update_complete", StackName=stack)
    assert tags(ecr, name) == {"cost-center": "43"}
    delete(cfn, stack)


def test_an_executed_change_set_is_kept_and_the_others_are_dropped(cfn, ecr):
    """Executing a change set deletes the stack's other change sets (they
    no longer apply); the executed one stays, EXECUTE_COMPLETE."""
    stack, name = unique("executed"), unique("executed-repo")
    cfn.create_change_set(StackName=stack, ChangeSetName="first", ChangeSetType="CREATE", TemplateBody=SMALL,
                          Parameters=[{"ParameterKey": "Name", "ParameterValue": name}])
    wait(cfn, "change_set_create_complete", StackName=stack, ChangeSetName="first")
    cfn.execute_change_set(StackName=stack, ChangeSetName="first")
    wait(cfn, "stack_create_complete", StackName=stack)
    for n in ("a", "b"):
        cfn.create_change_set(
            StackName=stack, ChangeSetName=n, UsePreviousTemplate=True,
            Parameters=[{"ParameterKey": "Name", "UsePreviousValue": True}, {"ParameterKey": "Mutability", "ParameterValue": "IMMUTABLE"}],
        )
        wait(cfn, "change_set_create_complete", StackName=stack, ChangeSetName=n)
    cfn.execute_change_set(StackName=stack, ChangeSetName="a")
    wait(cfn, "stack_update_complete", StackName=stack)
    assert cfn.describe_change_set(StackName=stack, ChangeSetName="a")["ExecutionStatus"] == "EXECUTE_COMPLETE"
    with pytest.raises(ClientError) as e:
        cfn.describe_change_set(StackName=stack, ChangeSetName="b")
    assert code(e) == "ChangeSetNotFound"
    listed = {x["ChangeSetName"]: x["ExecutionStatus"] for x in cfn.list_change_sets(StackName=stack)["Summaries"]}
    assert listed.get("a") == "EXECUTE_COMPLETE" and "b" not in listed
    delete(cfn, stack)


def test_exports_and_imports(cfn, ecr):
    exporter, importer = unique("exporter"), unique("importer")
    name = unique("exported")
    create(cfn, exporter, SMALL, {"Name": name})
    wait(cfn, "stack_create_complete", StackName=exporter)
    export = f"{exporter}-name"
    listed = {e["Name"]: e for e in cfn.list_exports()["Exports"]}
    assert listed[export]["Value"] == name
    assert listed[export]["ExportingStackId"] == stack_of(cfn, exporter)["StackId"]
    t = {
        "Resources": {
            "Repo": {
                "Type": "AWS::ECR::Repository",
                "Properties": {
                    "RepositoryName": {"Fn::Sub": ["${Base}-consumer", {"Base": {"Fn::ImportValue": export}}]},
                    "Tags": [{"Key": "imported", "Value": {"Fn::ImportValue": {"Fn::Sub": "${Exporter}-name"}}}],
                },
            }
        },
        "Parameters": {"Exporter": {"Type": "String"}},
    }
    create(cfn, importer, t, {"Exporter": exporter})
    wait(cfn, "stack_create_complete", StackName=importer)
    assert tags(ecr, f"{name}-consumer") == {"imported": name}
    assert cfn.list_imports(ExportName=export)["Imports"] == [importer]
    delete(cfn, importer)
    delete(cfn, exporter)
    assert repo(ecr, name) is None and repo(ecr, f"{name}-consumer") is None
    assert export not in {e["Name"] for e in cfn.list_exports()["Exports"]}


def test_termination_protection(cfn, ecr):
    stack, name = unique("protected"), unique("protected-repo")
    create(cfn, stack, SMALL, {"Name": name}, EnableTerminationProtection=True)
    wait(cfn, "stack_create_complete", StackName=stack)
    assert stack_of(cfn, stack)["EnableTerminationProtection"] is True
    with pytest.raises(ClientError) as e:
        cfn.delete_stack(StackName=stack)
    assert code(e) == "ValidationError"
    assert message(e) == f"Stack [{stack}] cannot be deleted while TerminationProtection is enabled"
    assert stack_of(cfn, stack)["StackStatus"] == "CREATE_COMPLETE" and repo(ecr, name) is not None
    cfn.update_termination_protection(StackName=stack, EnableTerminationProtection=False)
    assert stack_of(cfn, stack)["EnableTerminationProtection"] is False
    delete(cfn, stack)
    assert repo(ecr, name) is None


def test_change_sets(berth, cfn, ecr):
    stack, name = unique("cs"), unique("cs-repo")
    params_ = [{"ParameterKey": "Name", "ParameterValue": name}]
    made = cfn.create_change_set(StackName=stack, ChangeSetName="first", ChangeSetType="CREATE", TemplateBody=SMALL, Parameters=params_)
    assert made["Id"].startswith(f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:changeSet/first/")
    assert made["StackId"].startswith(STACK_ARN_PREFIX + stack + "/")
    # A stack created for a change set waits for review; nothing exists yet.
    assert stack_of(cfn, stack)["StackStatus"] == "REVIEW_IN_PROGRESS"
    wait(cfn, "change_set_create_complete", StackName=stack, ChangeSetName="first")
    cs = cfn.describe_change_set(StackName=stack, ChangeSetName="first")
    assert cs["Status"] == "CREATE_COMPLETE" and cs["ExecutionStatus"] == "AVAILABLE"
    assert cs["ChangeSetId"] == made["Id"] and cs["StackName"] == stack
    [change] = cs["Changes"]
    assert change["Type"] == "Resource"
    rc = change["ResourceChange"]
    assert (rc["Action"], rc["LogicalResourceId"], rc["ResourceType"]) == ("Add", "Repo", "AWS::ECR::Repository")
    assert repo(ecr, name) is None
    # By ARN too, and with the CLI.
    assert cfn.describe_change_set(ChangeSetName=made["Id"])["ChangeSetName"] == "first"
    assert ok(aws(berth, "describe-change-set", "--stack-name", stack, "--change-set-name", "first"))["Status"] == "CREATE_COMPLETE"
    summaries = cfn.list_change_sets(StackName=stack)["Summaries"]
    assert [(x["ChangeSetName"], x["Status"], x["ExecutionStatus"]) for x in summaries] == [("first", "CREATE_COMPLETE", "AVAILABLE")]

    ok(aws(berth, "execute-change-set", "--stack-name", stack, "--change-set-name", "first"))
    ok(aws(berth, "wait", "stack-create-complete", "--stack-name", stack))
    assert repo(ecr, name)["imageTagMutability"] == "MUTABLE"

    # An update change set: one property modified in place.
    cfn.create_change_set(
        StackName=stack, ChangeSetName="immutable", ChangeSetType="UPDATE", UsePreviousTemplate=True,
        Parameters=[{"ParameterKey": "Name", "UsePreviousValue": True}, {"ParameterKey": "Mutability", "ParameterValue": "IMMUTABLE"}],
    )
    ok(aws(berth, "wait", "change-set-create-complete", "--stack-name", stack, "--change-set-name", "immutable"))
    [change] = cfn.describe_change_set(StackName=stack, ChangeSetName="immutable")["Changes"]
    rc = change["ResourceChange"]
    assert (rc["Action"], rc["LogicalResourceId"], rc["PhysicalResourceId"], rc["Replacement"]) == ("Modify", "Repo", name, "False")
    assert "Properties" in rc["Scope"]
    assert any(d["Target"]["Name"] == "ImageTagMutability" for d in rc["Details"])
    # Another one, deleted unexecuted.
    cfn.create_change_set(
        StackName=stack, ChangeSetName="discarded", ChangeSetType="UPDATE", UsePreviousTemplate=True,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": name + "-renamed"}],
    )
    wait(cfn, "change_set_create_complete", StackName=stack, ChangeSetName="discarded")
    assert {x["ChangeSetName"] for x in cfn.list_change_sets(StackName=stack)["Summaries"]} >= {"immutable", "discarded"}
    ok(aws(berth, "delete-change-set", "--stack-name", stack, "--change-set-name", "discarded"))
    with pytest.raises(ClientError) as e:
        cfn.describe_change_set(StackName=stack, ChangeSetName="discarded")
    assert code(e) == "ChangeSetNotFound"
    assert repo(ecr, name + "-renamed") is None

    cfn.execute_change_set(StackName=stack, ChangeSetName="immutable")
    ok(aws(berth, "wait", "stack-update-complete", "--stack-name", stack))
    assert repo(ecr, name)["imageTagMutability"] == "IMMUTABLE"

    # A change set without changes fails with the reason the CLI looks for.
    cfn.create_change_set(
        StackName=stack, ChangeSetName="empty", ChangeSetType="UPDATE", UsePreviousTemplate=True,
        Parameters=[{"ParameterKey": "Name", "UsePreviousValue": True}, {"ParameterKey": "Mutability", "UsePreviousValue": True}],
    )
    with pytest.raises(WaiterError) as e:
        wait(cfn, "change_set_create_complete", StackName=stack, ChangeSetName="empty")
    last = e.value.last_response
    assert last["Status"] == "FAILED"
    assert "The submitted information didn't contain changes." in last["StatusReason"]
    with pytest.raises(ClientError) as e:
        cfn.execute_change_set(StackName=stack, ChangeSetName="empty")
    assert code(e) == "InvalidChangeSetStatus"
    delete(cfn, stack)


# ---- template features -----------------------------------------------------------------------------

FEATURES = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Description": "parameters, conditions, mappings, functions",
    "Parameters": {
        "Env": {"Type": "String", "Default": "dev", "AllowedValues": ["dev", "prod"]},
        "Owners": {"Type": "CommaDelimitedList", "Default": "alice,bob"},
        "Secret": {"Type": "String", "NoEcho": True, "Default": "s3cr3t"},
    },
    "Mappings": {
        "EnvSettings": {
            "dev": {"Mutability": "MUTABLE", "Keep": "3"},
            "prod": {"Mutability": "IMMUTABLE", "Keep": "30"},
        }
    },
    "Conditions": {
        "IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
        "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]},
        "ProdInUsEast1": {"Fn::And": [{"Condition": "IsProd"}, {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}]},
        "DevOrProd": {"Fn::Or": [{"Condition": "IsProd"}, {"Fn::Equals": [{"Ref": "Env"}, "dev"]}]},
    },
    "Resources": {
        "Main": {
            "Type": "AWS::ECR::Repository",
            "Properties": {
                "RepositoryName": {"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, "main"]]},
                "ImageTagMutability": {"Fn::FindInMap": ["EnvSettings", {"Ref": "Env"}, "Mutability"]},
                "ImageScanningConfiguration": {"Fn::If": ["IsProd", {"ScanOnPush": True}, {"Ref": "AWS::NoValue"}]},
                "Tags": [
                    {"Key": "account", "Value": {"Ref": "AWS::AccountId"}},
                    {"Key": "region", "Value": {"Ref": "AWS::Region"}},
                    {"Key": "partition", "Value": {"Ref": "AWS::Partition"}},
                    {"Key": "suffix", "Value": {"Ref": "AWS::URLSuffix"}},
                    {"Key": "stack-id", "Value": {"Ref": "AWS::StackId"}},
                    {"Key": "first-owner", "Value": {"Fn::Select": ["0", {"Ref": "Owners"}]}},
                    {"Key": "second", "Value": {"Fn::Select": [1, {"Fn::Split": ["/", "a/b/c"]}]}},
                    {"Key": "b64", "Value": {"Fn::Base64": "hi"}},
                    {"Key": "env", "Value": {"Fn::If": ["IsProd", "production", "development"]}},
                    {"Key": "known", "Value": {"Fn::If": ["DevOrProd", "yes", "no"]}},
                    {"Key": "east", "Value": {"Fn::If": ["ProdInUsEast1", "yes", "no"]}},
                    {"Key": "sub", "Value": {"Fn::Sub": ["${Env}-${X}-${AWS::Region}", {"X": {"Fn::Join": ["+", {"Ref": "Owners"}]}}]}},
                ],
            },
        },
        "Extra": {
            "Type": "AWS::ECR::Repository",
            "Condition": "NotProd",
            "DependsOn": "Main",
            "Properties": {"RepositoryName": {"Fn::Sub": "${AWS::StackName}-extra-${Env}"}},
        },
        "ProdOnly": {
            "Type": "AWS::ECR::Repository",
            "Condition": "IsProd",
            "Properties": {
                "RepositoryName": {"Fn::Sub": "${AWS::StackName}-prod"},
                # Fn::Sub with a variable map: Keep from the mapping.
                "LifecyclePolicy": {
                    "LifecyclePolicyText": {
                        "Fn::Sub": [
                            '{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":${Keep}},"action":{"type":"expire"}}]}',
                            {"Keep": {"Fn::FindInMap": ["EnvSettings", {"Ref": "Env"}, "Keep"]}},
                        ]
                    }
                },
            },
        },
    },
    "Outputs": {
        "MainName": {"Value": {"Ref": "Main"}},
        "MainArn": {"Value": {"Fn::GetAtt": ["Main", "Arn"]}},
        "Keep": {"Value": {"Fn::FindInMap": ["EnvSettings", {"Ref": "Env"}, "Keep"]}},
        "Owners": {"Value": {"Fn::Join": [",", {"Ref": "Owners"}]}},
        "ProdName": {"Condition": "IsProd", "Value": {"Ref": "ProdOnly"}},
    },
}


def test_parameters_conditions_mappings_functions_and_pseudo_parameters(cfn, ecr):
    stack = unique("features")
    stack_id = create(cfn, stack, FEATURES)
    wait(cfn, "stack_create_complete", StackName=stack)
    s = stack_of(cfn, stack)
    main, extra, prod = f"{stack}-main", f"{stack}-extra-dev", f"{stack}-prod"
    assert outputs(s) == {"MainName": main, "MainArn": repo_arn(main), "Keep": "3", "Owners": "alice,bob"}
    assert params(s)["Secret"]["ParameterValue"] == "****"
    assert params(s)["Owners"]["ParameterValue"] == "alice,bob"
    r = repo(ecr, main)
    assert r["imageTagMutability"] == "MUTABLE"
    # AWS::NoValue removed the property: the repository has the default.
    assert r["imageScanningConfiguration"] == {"scanOnPush": False}
    assert tags(ecr, main) == {
        "account": ACCOUNT,
        "region": REGION,
        "partition": "aws",
        "suffix": "amazonaws.com",
        "stack-id": stack_id,
        "first-owner": "alice",
        "second": "b",
        "b64": "aGk=",
        "env": "development",
        "known": "yes",
        "east": "no",
        "sub": f"dev-alice+bob-{REGION}",
    }
    assert repo(ecr, extra) is not None
    assert repo(ecr, prod) is None
    assert set(resources(cfn, stack)) == {"Main", "Extra"}
    # DependsOn: Extra is created only after Main is complete.
    ev = [(e["LogicalResourceId"], e["ResourceStatus"]) for e in events(cfn, stack)]
    assert ev.index(("Main", "CREATE_COMPLETE")) < ev.index(("Extra", "CREATE_IN_PROGRESS"))

    # Env=prod: conditions flip, the mapping follows.
    cfn.update_stack(
        StackName=stack, TemplateBody=json.dumps(FEATURES),
        Parameters=[{"ParameterKey": "Env", "ParameterValue": "prod"}, {"ParameterKey": "Owners", "ParameterValue": "carol"}],
    )
    wait(cfn, "stack_update_complete", StackName=stack)
    s = stack_of(cfn, stack)
    assert outputs(s) == {"MainName": main, "MainArn": repo_arn(main), "Keep": "30", "Owners": "carol", "ProdName": prod}
    r = repo(ecr, main)
    assert r["imageTagMutability"] == "IMMUTABLE" and r["imageScanningConfiguration"] == {"scanOnPush": True}
    t = tags(ecr, main)
    assert (t["env"], t["east"], t["first-owner"], t["sub"]) == ("production", "yes", "carol", f"prod-carol-{REGION}")
    assert repo(ecr, extra) is None
    assert lifecycle(ecr, prod)["rules"][0]["selection"]["countNumber"] == 30
    assert set(resources(cfn, stack)) == {"Main", "ProdOnly"}

    with pytest.raises(ClientError) as e:
        cfn.update_stack(StackName=stack, TemplateBody=json.dumps(FEATURES), Parameters=[{"ParameterKey": "Env", "ParameterValue": "staging"}])
    assert code(e) == "ValidationError" and "Parameter 'Env'" in message(e)
    delete(cfn, stack)
    assert repo(ecr, main) is None and repo(ecr, prod) is None


# Every short-form tag, and what YAML would read otherwise: an unquoted date
# as the format version and a policy's Version, a parameter's "true" for a
# Boolean property.
SHORT_FORMS = """\
AWSTemplateFormatVersion: 2010-09-09
Parameters:
  Env:
    Type: String
    Default: dev
  Scan:
    Type: String
    Default: 'true'
Mappings:
  Settings:
    dev: {Mutability: MUTABLE}
    prod: {Mutability: IMMUTABLE}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsDev: !Not [!Condition IsProd]
  Both: !And [!Condition IsDev, !Equals [!Ref 'AWS::Region', us-east-1]]
  Either: !Or [!Condition IsProd, !Condition Both]
Resources:
  Repo:
    Type: AWS::ECR::Repository
    Properties:
      RepositoryName: !Join ['-', [!Ref 'AWS::StackName', repo]]
      ImageTagMutability: !FindInMap [Settings, !Ref Env, Mutability]
      ImageScanningConfiguration:
        ScanOnPush: !Ref Scan
      RepositoryPolicyText:
        Version: 2012-10-17
        Statement:
          - Sid: !Sub 'Pull${Env}'
            Effect: Allow
            Principal: {AWS: !Sub 'arn:${AWS::Partition}:iam::${AWS::AccountId}:root'}
            Action: ecr:BatchGetImage
      Tags:
        - Key: parts
          Value: !Select [2, !Split [',', 'a,b,c']]
        - Key: encoded
          Value: !Base64 abc
        - Key: branch
          Value: !If [Either, 'yes', 'no']
        - Key: zone
          Value: !Select [0, !GetAZs '']
Outputs:
  Arn:
    Value: !GetAtt Repo.Arn
  ArnList:
    Value: !GetAtt [Repo, Arn]
  Name:
    Value: !Ref Repo
  Literal:
    Value: !Sub '${!Literal}-${AWS::Region}'
  Joined:
    # (YAML gives a node one tag: `!Base64 !Sub …` is not YAML, the long form is.)
    Value: !Join [':', [!Ref Env, !Base64 {'Fn::Sub': '${Env}x'}]]
"""


def test_yaml_short_forms(cfn, ecr):
    stack = unique("short")
    create(cfn, stack, SHORT_FORMS)
    wait(cfn, "stack_create_complete", StackName=stack)
    name = f"{stack}-repo"
    assert outputs(stack_of(cfn, stack)) == {
        "Arn": repo_arn(name),
        "ArnList": repo_arn(name),
        "Name": name,
        "Literal": f"${{Literal}}-{REGION}",
        "Joined": "dev:ZGV2eA==",
    }
    r = repo(ecr, name)
    assert r["imageTagMutability"] == "MUTABLE" and r["imageScanningConfiguration"] == {"scanOnPush": True}
    policy = repo_policy(ecr, name)
    assert policy["Version"] == "2012-10-17"
    assert policy["Statement"][0]["Sid"] == "Pulldev"
    assert policy["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    t = tags(ecr, name)
    assert (t["parts"], t["encoded"], t["branch"]) == ("c", "YWJj", "yes")
    assert t["zone"].startswith(REGION)
    # The template comes back as it was sent.
    assert cfn.get_template(StackName=stack)["TemplateBody"] == SHORT_FORMS
    delete(cfn, stack)
    assert repo(ecr, name) is None


def test_get_azs_gives_the_regions_zones(cfn, ecr):
    stack = unique("azs")
    t = {
        "Resources": {
            "Repo": {
                "Type": "AWS::ECR::Repository",
                "Properties": {
                    "RepositoryName": {"Fn::Sub": "${AWS::StackName}-r"},
                    "Tags": [{"Key": "az", "Value": {"Fn::Select": [0, {"Fn::GetAZs": ""}]}}],
                },
            }
        },
        "Outputs": {"Zones": {"Value": {"Fn::Join": [",", {"Fn::GetAZs": {"Ref": "AWS::Region"}}]}}},
    }
    create(cfn, stack, t)
    wait(cfn, "stack_create_complete", StackName=stack)
    zones = outputs(stack_of(cfn, stack))["Zones"].split(",")
    assert zones and all(z.startswith(REGION) and len(z) == len(REGION) + 1 for z in zones)
    assert tags(ecr, f"{stack}-r")["az"] == zones[0]
    delete(cfn, stack)


def registry_policy(ecr):
    try:
        return json.loads(ecr.get_registry_policy()["policyText"])
    except ecr.exceptions.RegistryPolicyNotFoundException:
        return None


def test_registry_policy_and_registry_scanning_configuration(cfn, ecr):
    stack = unique("registry")
    t = """\
Resources:
  Policy:
    Type: AWS::ECR::RegistryPolicy
    Properties:
      PolicyText:
        Version: '2012-10-17'
        Statement:
          - Sid: Replication
            Effect: Allow
            Principal:
              AWS: arn:aws:iam::210987654321:root
            Action: [ecr:CreateRepository, ecr:ReplicateImage]
            Resource: !Sub 'arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*'
  Scanning:
    Type: AWS::ECR::RegistryScanningConfiguration
    Properties:
      ScanType: BASIC
      Rules:
        - ScanFrequency: SCAN_ON_PUSH
          RepositoryFilters:
            - Filter: cfn-scanned-*
              FilterType: WILDCARD
Outputs:
  RegistryId:
    Value: !GetAtt Policy.RegistryId
"""
    assert registry_policy(ecr) is None
    create(cfn, stack, t)
    wait(cfn, "stack_create_complete", StackName=stack)
    assert outputs(stack_of(cfn, stack)) == {"RegistryId": ACCOUNT}
    [st] = registry_policy(ecr)["Statement"]
    assert st["Sid"] == "Replication" and st["Resource"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/*"
    cfg = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    assert cfg == {
        "scanType": "BASIC",
        "rules": [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "cfn-scanned-*", "filterType": "WILDCARD"}]}],
    }
    delete(cfn, stack)
    assert registry_policy(ecr) is None
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}


def test_replacement_on_an_immutable_property(berth, cfn, ecr, tmp_path):
    """Changing RepositoryName replaces the repository: the new one is
    created, then the old one deleted; Ref and outputs follow."""
    stack, old, new = unique("replace"), unique("old"), unique("new")
    ok(deploy(berth, tmp_path, stack, SMALL, "--parameter-overrides", f"Name={old}"))
    cfn.create_change_set(
        StackName=stack, ChangeSetName="rename", UsePreviousTemplate=True,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": new}],
    )
    wait(cfn, "change_set_create_complete", StackName=stack, ChangeSetName="rename")
    [change] = cfn.describe_change_set(StackName=stack, ChangeSetName="rename")["Changes"]
    rc = change["ResourceChange"]
    assert (rc["Action"], rc["Replacement"]) == ("Modify", "True")
    [detail] = [d for d in rc["Details"] if d["Target"]["Name"] == "RepositoryName"]
    assert detail["Target"]["RequiresRecreation"] == "Always"
    cfn.execute_change_set(StackName=stack, ChangeSetName="rename")
    wait(cfn, "stack_update_complete", StackName=stack)
    s = stack_of(cfn, stack)
    assert outputs(s) == {"Name": new}
    assert resources(cfn, stack)["Repo"]["PhysicalResourceId"] == new
    assert repo(ecr, new) is not None and repo(ecr, old) is None
    ev = [(e["LogicalResourceId"], e["ResourceStatus"], e.get("PhysicalResourceId")) for e in events(cfn, stack)]
    # A replacement is an update that makes a new physical resource; the old
    # one is deleted in the cleanup after it.
    assert ev.index(("Repo", "UPDATE_COMPLETE", new)) < ev.index(("Repo", "DELETE_COMPLETE", old))
    assert (stack, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", s["StackId"]) in ev
    delete(cfn, stack)
    assert repo(ecr, new) is None


def test_update_replace_policy_retain_keeps_the_replaced_repository(cfn, ecr):
    stack, old, new = unique("replace-retain"), unique("old-kept"), unique("new-kept")
    t = {
        "Parameters": {"Name": {"Type": "String"}},
        "Resources": {
            "Repo": {
                "Type": "AWS::ECR::Repository",
                "UpdateReplacePolicy": "Retain",
                "Properties": {"RepositoryName": {"Ref": "Name"}},
            }
        },
    }
    create(cfn, stack, t, {"Name": old})
    wait(cfn, "stack_create_complete", StackName=stack)
    cfn.update_stack(StackName=stack, TemplateBody=json.dumps(t), Parameters=[{"ParameterKey": "Name", "ParameterValue": new}])
    wait(cfn, "stack_update_complete", StackName=stack)
    assert resources(cfn, stack)["Repo"]["PhysicalResourceId"] == new
    assert repo(ecr, new) is not None and repo(ecr, old) is not None
    delete(cfn, stack)
    # DeletionPolicy is Delete (the default): the stack's repository goes, the replaced one stays.
    assert repo(ecr, new) is None and repo(ecr, old) is not None
    ecr.delete_repository(repositoryName=old)


def test_every_repository_property(berth, cfn, ecr):
    """Encryption with a KMS key of the same endpoint, tag mutability with
    exclusion filters, scanning, EmptyOnDelete; a change of a create-only
    property of a custom-named repository cannot be made in place."""
    kms = berth.client(service="kms")
    key = kms.create_key(Description="cfn repository key")["KeyMetadata"]["Arn"]
    stack, name = unique("props"), unique("props-repo")
    t = {
        "Parameters": {"Key": {"Type": "String"}, "Name": {"Type": "String"}, "Encryption": {"Type": "String", "Default": "KMS"}},
        "Conditions": {"WithKey": {"Fn::Equals": [{"Ref": "Encryption"}, "KMS"]}},
        "Resources": {
            "Repo": {
                "Type": "AWS::ECR::Repository",
                "Properties": {
                    "RepositoryName": {"Ref": "Name"},
                    "EncryptionConfiguration": {
                        "EncryptionType": {"Ref": "Encryption"},
                        "KmsKey": {"Fn::If": ["WithKey", {"Ref": "Key"}, {"Ref": "AWS::NoValue"}]},
                    },
                    "ImageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
                    "ImageTagMutabilityExclusionFilters": [
                        {"ImageTagMutabilityExclusionFilterType": "WILDCARD", "ImageTagMutabilityExclusionFilterValue": "latest"},
                        {"ImageTagMutabilityExclusionFilterType": "WILDCARD", "ImageTagMutabilityExclusionFilterValue": "dev-*"},
                    ],
                    "ImageScanningConfiguration": {"ScanOnPush": False},
                    "EmptyOnDelete": True,
                },
            }
        },
        "Outputs": {"Uri": {"Value": {"Fn::GetAtt": ["Repo", "RepositoryUri"]}}},
    }
    create(cfn, stack, t, {"Key": key, "Name": name})
    wait(cfn, "stack_create_complete", StackName=stack)
    r = repo(ecr, name)
    assert r["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}
    assert r["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert r["imageTagMutabilityExclusionFilters"] == [
        {"filterType": "WILDCARD", "filter": "latest"},
        {"filterType": "WILDCARD", "filter": "dev-*"},
    ]
    assert r["imageScanningConfiguration"] == {"scanOnPush": False}
    assert outputs(stack_of(cfn, stack)) == {"Uri": r["repositoryUri"]}
    # The key is used: pushing works, and the image is readable back.
    put(ecr, name, new_image(ecr, name), tag="latest")
    assert ecr.describe_images(repositoryName=name)["imageDetails"][0]["imageTags"] == ["latest"]

    # Encryption is create-only: the repository would be replaced, which a
    # custom name forbids. The update fails and rolls back; nothing changes.
    cfn.update_stack(
        StackName=stack, TemplateBody=json.dumps(t),
        Parameters=[{"ParameterKey": "Key", "UsePreviousValue": True}, {"ParameterKey": "Name", "UsePreviousValue": True},
                    {"ParameterKey": "Encryption", "ParameterValue": "AES256"}],
    )
    wait(cfn, "stack_rollback_complete", StackName=stack)
    [fail] = [e for e in events(cfn, stack) if e["LogicalResourceId"] == "Repo" and e["ResourceStatus"] == "UPDATE_FAILED"]
    assert "CloudFormation cannot update a stack when a custom-named resource requires replacing" in fail["ResourceStatusReason"]
    assert repo(ecr, name)["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}
    # EmptyOnDelete: the stack's deletion takes the image with it.
    delete(cfn, stack)
    assert repo(ecr, name) is None


def test_generated_names_and_replacement_by_encryption(cfn, ecr):
    """Without RepositoryName CloudFormation names the repository after the
    stack and the logical id; a change of encryption (create-only) then
    replaces it under a new generated name."""
    stack = unique("Generated")
    t = {
        "Parameters": {"Encryption": {"Type": "String", "Default": "AES256"}},
        "Resources": {"Images": {"Type": "AWS::ECR::Repository", "Properties": {"EncryptionConfiguration": {"EncryptionType": {"Ref": "Encryption"}}}}},
        "Outputs": {"Name": {"Value": {"Ref": "Images"}}},
    }
    create(cfn, stack, t)
    wait(cfn, "stack_create_complete", StackName=stack)
    first = outputs(stack_of(cfn, stack))["Name"]
    assert first.startswith(f"{stack.lower()}-images-"), first
    assert repo(ecr, first)["encryptionConfiguration"] == {"encryptionType": "AES256"}
    cfn.update_stack(StackName=stack, TemplateBody=json.dumps(t), Parameters=[{"ParameterKey": "Encryption", "ParameterValue": "KMS"}])
    wait(cfn, "stack_update_complete", StackName=stack)
    second = outputs(stack_of(cfn, stack))["Name"]
    assert second != first and second.startswith(f"{stack.lower()}-images-")
    assert repo(ecr, second)["encryptionConfiguration"]["encryptionType"] == "KMS"
    assert repo(ecr, first) is None
    delete(cfn, stack)
    assert repo(ecr, second) is None


def test_a_repository_deleted_behind_the_stacks_back_does_not_stop_its_deletion(cfn, ecr):
    stack, name = unique("out-of-band"), unique("gone-already")
    stack_id = create(cfn, stack, SMALL, {"Name": name})
    wait(cfn, "stack_create_complete", StackName=stack)
    ecr.delete_repository(repositoryName=name)
    delete(cfn, stack)
    assert stack_of(cfn, stack_id)["StackStatus"] == "DELETE_COMPLETE"
    assert ("Repo", "DELETE_COMPLETE") in [(e["LogicalResourceId"], e["ResourceStatus"]) for e in events(cfn, stack_id)]


# ---- failure and rollback --------------------------------------------------------------------------

# Long enough for ECR's 100-character minimum, and invalid: priority 0, no count.
BAD_LIFECYCLE = json.dumps(
    {"rules": [{"rulePriority": 0, "description": "an invalid rule", "selection": {"tagStatus": "any"}, "action": {"type": "expire"}}]}
)


def two_repositories(first, second, second_props=None):
    return {
        "Resources": {
            "First": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": first}},
            "Second": {
                "Type": "AWS::ECR::Repository",
                "DependsOn": "First",
                "Properties": {"RepositoryName": second, **(second_props or {})},
            },
        }
    }


def test_a_failing_resource_rolls_the_create_back(berth, cfn, ecr, tmp_path):
    stack, first, second = unique("fails"), unique("first"), unique("second")
    t = two_repositories(first, second, {"LifecyclePolicy": {"LifecyclePolicyText": BAD_LIFECYCLE}})
    failed(
        deploy(berth, tmp_path, stack, t),
        "Failed to create/update the stack",
        f"aws cloudformation describe-stack-events --stack-name {stack}",
    )
    s = stack_of(cfn, stack)
    assert s["StackStatus"] == "ROLLBACK_COMPLETE"
    ev = events(cfn, stack)
    [fail] = [e for e in ev if e["LogicalResourceId"] == "Second" and e["ResourceStatus"] == "CREATE_FAILED"]
    assert "lifecycle policy" in fail["ResourceStatusReason"].lower(), fail["ResourceStatusReason"]
    statuses = [(e["LogicalResourceId"], e["ResourceStatus"]) for e in ev]
    assert (stack, "ROLLBACK_IN_PROGRESS") in statuses
    assert statuses.index(("First", "DELETE_COMPLETE")) > statuses.index((stack, "ROLLBACK_IN_PROGRESS"))
    assert statuses[-1] == (stack, "ROLLBACK_COMPLETE")
    # Nothing is left behind.
    assert repo(ecr, first) is None and repo(ecr, second) is None
    # A stack in ROLLBACK_COMPLETE can only be deleted.
    with pytest.raises(ClientError) as e:
        cfn.update_stack(StackName=stack, TemplateBody=json.dumps(two_repositories(first, second)))
    assert code(e) == "ValidationError" and "ROLLBACK_COMPLETE" in message(e)
    delete(cfn, stack)


def test_a_failing_update_rolls_back_to_the_previous_state(berth, cfn, ecr, tmp_path):
    stack, first, second = unique("update-fails"), unique("kept"), unique("never")
    base = {
        "Resources": {
            "First": {
                "Type": "AWS::ECR::Repository",
                "Properties": {
                    "RepositoryName": first,
                    "ImageTagMutability": "MUTABLE",
                    "LifecyclePolicy": {"LifecyclePolicyText": json.dumps(keep(7))},
                    "Tags": [{"Key": "v", "Value": "1"}],
                },
            }
        },
        "Outputs": {"Mutability": {"Value": "MUTABLE"}},
    }
    ok(deploy(berth, tmp_path, stack, base))
    broken = json.loads(json.dumps(base))
    broken["Resources"]["First"]["Properties"].update(ImageTagMutability="IMMUTABLE", Tags=[{"Key": "v", "Value": "2"}])
    broken["Resources"]["Second"] = {
        "Type": "AWS::ECR::Repository",
        "DependsOn": "First",
        "Properties": {"RepositoryName": second, "LifecyclePolicy": {"LifecyclePolicyText": BAD_LIFECYCLE}},
    }
    broken["Outputs"]["Mutability"]["Value"] = "IMMUTABLE"
    failed(deploy(berth, tmp_path, stack, broken), "Failed to create/update the stack")
    wait(cfn, "stack_rollback_complete", StackName=stack)
    s = stack_of(cfn, stack)
    assert s["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    assert outputs(s) == {"Mutability": "MUTABLE"}
    ev = events(cfn, stack)
    [fail] = [e for e in ev if e["LogicalResourceId"] == "Second" and e["ResourceStatus"] == "CREATE_FAILED"]
    assert fail["ResourceStatusReason"]
    assert (stack, "UPDATE_ROLLBACK_IN_PROGRESS") in [(e["LogicalResourceId"], e["ResourceStatus"]) for e in ev]
    # The first repository's settings are restored; the second is gone.
    assert repo(ecr, first)["imageTagMutability"] == "MUTABLE"
    assert tags(ecr, first) == {"v": "1"}
    assert lifecycle(ecr, first) == keep(7)
    assert repo(ecr, second) is None
    assert set(resources(cfn, stack)) == {"First"}
    assert json.loads(json.dumps(cfn.get_template(StackName=stack)["TemplateBody"])) == base
    # The stack takes updates again.
    ok(deploy(berth, tmp_path, stack, broken | {"Resources": {"First": broken["Resources"]["First"]}}))
    assert repo(ecr, first)["imageTagMutability"] == "IMMUTABLE"
    delete(cfn, stack)
    assert repo(ecr, first) is None


def test_on_failure_delete_and_do_nothing(cfn, ecr):
    for on_failure, final in [("DELETE", "DELETE_COMPLETE"), ("DO_NOTHING", "CREATE_FAILED")]:
        stack, first, second = unique("on-failure"), unique("first"), unique("second")
        t = two_repositories(first, second, {"LifecyclePolicy": {"LifecyclePolicyText": BAD_LIFECYCLE}})
        stack_id = create(cfn, stack, t, OnFailure=on_failure)
        wait_failed(cfn, "stack_create_complete", StackName=stack_id)
        assert stack_of(cfn, stack_id)["StackStatus"] == final
        assert (repo(ecr, first) is None) == (on_failure == "DELETE")
        if on_failure == "DO_NOTHING":
            delete(cfn, stack)
        assert repo(ecr, first) is None


def test_disable_rollback_keeps_what_was_created(cfn, ecr):
    stack, first, second = unique("no-rollback"), unique("stays"), unique("fails")
    create(cfn, stack, two_repositories(first, second, {"LifecyclePolicy": {"LifecyclePolicyText": BAD_LIFECYCLE}}), DisableRollback=True)
    last = wait_failed(cfn, "stack_create_complete", StackName=stack)
    assert last["Stacks"][0]["StackStatus"] == "CREATE_FAILED"
    assert repo(ecr, first) is not None
    assert resources(cfn, stack)["First"]["ResourceStatus"] == "CREATE_COMPLETE"
    assert resources(cfn, stack)["Second"]["ResourceStatus"] == "CREATE_FAILED"
    # Deleting the stack deletes what it holds.
    delete(cfn, stack)
    assert repo(ecr, first) is None and repo(ecr, second) is None


# ---- bad input -------------------------------------------------------------------------------------


def refused(cfn, berth, tmp_path, template, needle, parameters=(), cli=True):
    """create-stack (boto3), create-change-set (boto3) and deploy (the CLI,
    unless `cli` is false) each refuse `template` with a ValidationError
    saying `needle`, and leave no stack behind."""
    stack = unique("bad")
    body = template if isinstance(template, str) else json.dumps(template)
    with pytest.raises(ClientError) as e:
        create(cfn, stack, body, parameters)
    assert code(e) == "ValidationError", e.value.response
    assert needle in message(e), message(e)
    with pytest.raises(ClientError) as e:
        cfn.create_change_set(
            StackName=stack, ChangeSetName="cs", ChangeSetType="CREATE", TemplateBody=body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in dict(parameters).items()],
        )
    assert code(e) == "ValidationError" and needle in message(e), message(e)
    if cli:
        extra = ["--parameter-overrides", *[f"{k}={v}" for k, v in dict(parameters).items()]] if parameters else []
        out = aws(berth, "deploy", "--template-file", str(write(tmp_path, body)), "--stack-name", stack, *extra)
        assert out.returncode in (254, 255), (out.returncode, out.stdout, out.stderr)
    with pytest.raises(ClientError) as e:
        cfn.describe_stacks(StackName=stack)
    assert message(e) == f"Stack with id {stack} does not exist"
    return stack


def test_malformed_templates_are_refused(berth, cfn, tmp_path):
    refused(cfn, berth, tmp_path, '{"Resources": {"R": ', "Template format error")
    refused(cfn, berth, tmp_path, "Resources:\n  R: [unclosed\n", "Template format error")
    refused(cfn, berth, tmp_path, {"Resources": []}, "Template format error")
    refused(cfn, berth, tmp_path, {"Parameters": {}}, "Template format error: At least one Resources member must be defined.")
    refused(cfn, berth, tmp_path, {"Resources": {"R": {"Properties": {}}}}, "Template format error")
    with pytest.raises(ClientError) as e:
        cfn.validate_template(TemplateBody='{"Resources": {"R": ')
    assert code(e) == "ValidationError" and "Template format error" in message(e)
    failed(aws(berth, "validate-template", "--template-body", '{"Resources": {"R": '), "ValidationError", "Template format error")


def test_unknown_resource_types_and_functions_are_refused(berth, cfn, ecr, tmp_path):
    name = unique("never-made")
    t = {
        "Resources": {
            "Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": name}},
            "Foo": {"Type": "AWS::Foo::Bar", "DependsOn": "Repo", "Properties": {}},
        }
    }
    refused(cfn, berth, tmp_path, t, "Template format error: Unrecognized resource types: [AWS::Foo::Bar]")
    t = {"Resources": {"Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": {"Fn::Frobnicate": name}}}}}
    refused(cfn, berth, tmp_path, t, "Fn::Frobnicate")
    refused(
        cfn, berth, tmp_path,
        {"Resources": {"Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": {"Ref": "Nowhere"}}}}},
        "Template format error: Unresolved resource dependencies [Nowhere] in the Resources block of the template",
    )
    assert repo(ecr, name) is None


def test_getatt_of_an_unknown_attribute_is_refused(berth, cfn, ecr, tmp_path):
    name = unique("getatt")
    refused(
        cfn, berth, tmp_path,
        {
            "Resources": {
                "Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": name}},
                "Other": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": {"Fn::GetAtt": ["Repo", "NoSuchAttribute"]}}},
            }
        },
        "Template error: resource Repo does not support attribute type NoSuchAttribute in Fn::GetAtt",
    )
    assert repo(ecr, name) is None


def test_circular_depends_on_is_refused(berth, cfn, ecr, tmp_path):
    a, b = unique("a"), unique("b")
    t = {
        "Resources": {
            "A": {"Type": "AWS::ECR::Repository", "DependsOn": "B", "Properties": {"RepositoryName": a}},
            "B": {"Type": "AWS::ECR::Repository", "DependsOn": ["A"], "Properties": {"RepositoryName": b}},
        }
    }
    refused(cfn, berth, tmp_path, t, "Circular dependency between resources: [")
    # Through a Ref as through DependsOn.
    t["Resources"]["B"] = {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": {"Fn::Sub": "${A}-b"}}}
    refused(cfn, berth, tmp_path, t, "Circular dependency between resources")
    assert repo(ecr, a) is None and repo(ecr, b) is None


def test_parameters_are_checked(berth, cfn, ecr, tmp_path):
    name = unique("param")
    refused(cfn, berth, tmp_path, SMALL, "Parameters: [Name] must have values")
    # (The CLI's deploy sends only the template's parameters.)
    refused(cfn, berth, tmp_path, SMALL, "Parameters: [Nope] do not exist in the template", {"Name": name, "Nope": "x"}, cli=False)
    number = {"Parameters": {"N": {"Type": "Number"}}, "Resources": {"Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": name}}}}
    refused(cfn, berth, tmp_path, number, "Parameter 'N' must be a number", {"N": "ten"})
    assert repo(ecr, name) is None


def test_a_value_outside_allowed_values_is_refused(berth, cfn, ecr, tmp_path):
    name = unique("allowed")
    refused(cfn, berth, tmp_path, SMALL, "Parameter 'Mutability' must be one of AllowedValues", {"Name": name, "Mutability": "SOMETIMES"})
    assert repo(ecr, name) is None


def test_fn_join_of_the_wrong_shape_is_refused(berth, cfn, ecr, tmp_path):
    name = unique("joined")
    refused(
        cfn, berth, tmp_path,
        {"Resources": {"Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": {"Fn::Join": "-"}}}}},
        "Template error: every Fn::Join object requires two parameters",
    )
    refused(
        cfn, berth, tmp_path,
        {"Resources": {"Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": {"Fn::Join": ["-", "not-a-list"]}}}}},
        "Template error: every Fn::Join object requires two parameters",
    )
    assert repo(ecr, name) is None


def test_wrong_types_are_refused(berth, cfn, ecr, tmp_path):
    name = unique("typed")
    refused(
        cfn, berth, tmp_path,
        {"Resources": {"Repo": {"Type": "AWS::ECR::Repository", "DependsOn": 7, "Properties": {"RepositoryName": name}}}},
        "DependsOn",
    )
    refused(
        cfn, berth, tmp_path,
        {"Resources": {"Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": name, "ImageScanningConfiguration": "yes"}}}},
        "ImageScanningConfiguration",
    )
    assert repo(ecr, name) is None


def test_stack_names_and_missing_stacks(cfn, cfn_raw):
    for bad in ["1starts-with-digit", "has_underscore", "a" * 129]:
        with pytest.raises(ClientError) as e:
            create(cfn_raw, bad, SMALL, {"Name": unique("n")})
        assert code(e) == "ValidationError", bad
    missing = unique("missing")
    for call in [
        lambda: cfn.describe_stack_events(StackName=missing),
        lambda: cfn.describe_stack_resources(StackName=missing),
        lambda: cfn.get_template(StackName=missing),
        lambda: cfn.update_stack(StackName=missing, TemplateBody=SMALL),
    ]:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "ValidationError" and message(e) == f"Stack with id {missing} does not exist"
    with pytest.raises(ClientError) as e:
        cfn.describe_change_set(StackName=missing, ChangeSetName="x")
    assert code(e) == "ChangeSetNotFound"


# ---- IAM -------------------------------------------------------------------------------------------


def test_a_caller_without_cloudformation_permissions_is_denied(berth, ecr):
    name, arn, cfn_user = berth.user_with_policy(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]},
        service="cloudformation",
    )
    stack = unique("denied")
    with pytest.raises(ClientError) as e:
        create(cfn_user, stack, SMALL, {"Name": unique("r")})
    assert code(e) == "AccessDenied"
    assert arn in message(e) and "cloudformation:CreateStack" in message(e)
    with pytest.raises(ClientError) as e:
        cfn_user.describe_stacks()
    assert code(e) == "AccessDenied" and "cloudformation:DescribeStacks" in message(e)
    _, _, key, secret = berth.user_key({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]})
    failed(aws(berth, "list-stacks", key_id=key, secret=secret), "AccessDenied", "cloudformation:ListStacks")


def test_the_stack_acts_as_its_caller(berth, cfn, ecr):
    """With cloudformation:* but not ecr:CreateRepository, the stack is made
    and its repository fails to create, AccessDenied in the reason; the
    rollback leaves nothing."""
    _, arn, cfn_user = berth.user_with_policy(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "cloudformation:*", "Resource": "*"},
                {"Effect": "Allow", "Action": ["ecr:Describe*", "ecr:List*", "ecr:DeleteRepository"], "Resource": "*"},
            ],
        },
        service="cloudformation",
    )
    stack, name = unique("as-caller"), unique("not-allowed")
    create(cfn_user, stack, SMALL, {"Name": name})
    last = wait_failed(cfn_user, "stack_create_complete", StackName=stack)
    assert last["Stacks"][0]["StackStatus"] == "ROLLBACK_COMPLETE"
    [fail] = [e for e in events(cfn_user, stack) if e["LogicalResourceId"] == "Repo" and e["ResourceStatus"] == "CREATE_FAILED"]
    reason = fail["ResourceStatusReason"]
    assert "ecr:CreateRepository" in reason and ("AccessDenied" in reason or "not authorized" in reason), reason
    assert repo(ecr, name) is None
    delete(cfn_user, stack)
    # The same template as the root works.
    root_stack = unique("as-root")
    create(cfn, root_stack, SMALL, {"Name": name})
    wait(cfn, "stack_create_complete", StackName=root_stack)
    assert repo(ecr, name) is not None
    delete(cfn, root_stack)


def test_stack_permissions_by_stack_arn(berth, cfn, ecr):
    """Stack actions are authorized on the stack's ARN
    (arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/ID)."""
    prefix = unique("team-a")
    _, _, mine = berth.user_with_policy(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "cloudformation:*", "Resource": f"{STACK_ARN_PREFIX}{prefix}-*/*"},
                {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
            ],
        },
        service="cloudformation",
    )
    ours, theirs = f"{prefix}-app", unique("team-b")
    name = unique("team-a-repo")
    create(mine, ours, SMALL, {"Name": name})
    wait(mine, "stack_create_complete", StackName=ours)
    assert repo(ecr, name) is not None
    with pytest.raises(ClientError) as e:
        create(mine, theirs, SMALL, {"Name": unique("team-b-repo")})
    assert code(e) == "AccessDenied" and f"{STACK_ARN_PREFIX}{theirs}/" in message(e)
    create(cfn, theirs, SMALL, {"Name": unique("team-b-repo")})
    wait(cfn, "stack_create_complete", StackName=theirs)
    with pytest.raises(ClientError) as e:
        mine.describe_stacks(StackName=theirs)
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        mine.delete_stack(StackName=theirs)
    assert code(e) == "AccessDenied"
    # ValidateTemplate names no stack: it needs `*`.
    with pytest.raises(ClientError) as e:
        mine.validate_template(TemplateBody=SMALL)
    assert code(e) == "AccessDenied"
    delete(mine, ours)
    delete(cfn, theirs)
    assert repo(ecr, name) is None


def test_ssm_typed_parameters_are_read_as_the_caller(berth, ecr, cdk_templates):
    """Resolving an AWS::SSM::Parameter::Value<String> parameter reads the
    parameter store as the caller: without ssm:GetParameters on the
    parameter, the stack is refused; with it, the CDK template deploys."""
    t = json.loads(cdk_templates["guide"].read_text())
    name = unique("ssm-caller")
    t["Resources"][repository_of(t)]["Properties"]["RepositoryName"] = name
    base = [
        {"Effect": "Allow", "Action": "cloudformation:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
    ]
    _, _, no_ssm = berth.user_with_policy({"Version": "2012-10-17", "Statement": base}, service="cloudformation")
    stack = unique("ssm-caller")
    with pytest.raises(ClientError) as e:
        create(no_ssm, stack, t)
    assert "ssm:GetParameters" in message(e)
    assert "arn:aws:ssm:us-east-1:123456789012:parameter/cdk-bootstrap/hnb659fds/version" in message(e)
    assert repo(ecr, name) is None
    allowed = base + [
        {"Effect": "Allow", "Action": "ssm:GetParameters", "Resource": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/cdk-bootstrap/*"}
    ]
    _, _, with_ssm = berth.user_with_policy({"Version": "2012-10-17", "Statement": allowed}, service="cloudformation")
    create(with_ssm, stack, t)
    wait(with_ssm, "stack_create_complete", StackName=stack)
    assert params(stack_of(with_ssm, stack))["BootstrapVersion"]["ResolvedValue"] == "32"
    delete(with_ssm, stack)
    ecr.delete_repository(repositoryName=name)


def test_parameters_berth_does_not_act_on_are_refused_by_name(berth, cfn, ecr, tmp_path):
    """A role, notifications, a timeout or a stack policy that Berth would
    ignore is refused, naming it, and nothing is made."""
    stack = unique("refused")
    name = unique("refused-repo")
    template = f"Resources:\n  Repo:\n    Type: AWS::ECR::Repository\n    Properties: {{RepositoryName: {name}}}\n"
    path = write(tmp_path, template)
    failed(
        cli_deploy(berth, path, stack, "--role-arn", f"arn:aws:iam::{ACCOUNT}:role/deployer"),
        "ValidationError",
        "RoleARN is not supported",
    )
    for extra in (
        {"TimeoutInMinutes": 5},
        {"NotificationARNs": [f"arn:aws:sns:{REGION}:{ACCOUNT}:topic"]},
        {"StackPolicyBody": '{"Statement": []}'},
    ):
        with pytest.raises(ClientError) as e:
            cfn.create_stack(StackName=stack, TemplateBody=template, **extra)
        assert code(e) == "ValidationError" and f"{next(iter(extra))} is not supported" in message(e)
    with pytest.raises(ClientError):
        ecr.describe_repositories(repositoryNames=[name])
    failed(aws(berth, "describe-stacks", "--stack-name", stack), "does not exist")


REPLICATION_STACK = """
AWSTemplateFormatVersion: '2010-09-09'
Parameters:
  Prefix:
    Type: String
Resources:
  Replication:
    Type: AWS::ECR::ReplicationConfiguration
    Properties:
      ReplicationConfiguration:
        Rules:
          - Destinations:
              - Region: !Ref AWS::Region
                RegistryId: '222233334444'
            RepositoryFilters:
              - Filter: !Ref Prefix
                FilterType: PREFIX_MATCH
  Template:
    Type: AWS::ECR::RepositoryCreationTemplate
    Properties:
      Prefix: replicated
      AppliedFor: [REPLICATION]
      Description: !Sub "from ${AWS::StackName}"
      ImageTagMutability: IMMUTABLE
      ResourceTags:
        - Key: team
          Value: platform
  Cache:
    Type: AWS::ECR::PullThroughCacheRule
    Properties:
      EcrRepositoryPrefix: cfn-quay
      UpstreamRegistryUrl: quay.io
Outputs:
  Registry:
    Value: !GetAtt Replication.RegistryId
"""


def test_replication_configuration_creation_template_and_pull_through_cache_resources(berth, cfn, ecr, tmp_path):
    stack = unique("replication")
    ok(deploy(berth, tmp_path, stack, REPLICATION_STACK, "--parameter-overrides", "Prefix=prod/"))
    assert outputs(stack_of(cfn, stack)) == {"Registry": ACCOUNT}
    rules = ecr.describe_registry()["replicationConfiguration"]["rules"]
    assert rules == [{"destinations": [{"region": REGION, "registryId": "222233334444"}],
                      "repositoryFilters": [{"filter": "prod/", "filterType": "PREFIX_MATCH"}]}]
    t = ecr.describe_repository_creation_templates(prefixes=["replicated"])["repositoryCreationTemplates"][0]
    assert (t["description"], t["imageTagMutability"]) == (f"from {stack}", "IMMUTABLE")
    assert t["resourceTags"] == [{"Key": "team", "Value": "platform"}]
    cache = ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["cfn-quay"])["pullThroughCacheRules"][0]
    assert cache["upstreamRegistryUrl"] == "quay.io"
    # An update changes both in place.
    ok(deploy(berth, tmp_path, stack, REPLICATION_STACK, "--parameter-overrides", "Prefix=team/"))
    rules = ecr.describe_registry()["replicationConfiguration"]["rules"]
    assert rules[0]["repositoryFilters"] == [{"filter": "team/", "filterType": "PREFIX_MATCH"}]
    # Deleting the stack removes both.
    ok(aws(berth, "delete-stack", "--stack-name", stack))
    ok(aws(berth, "wait", "stack-delete-complete", "--stack-name", stack))
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []
    assert ecr.describe_pull_through_cache_rules()["pullThroughCacheRules"] == []

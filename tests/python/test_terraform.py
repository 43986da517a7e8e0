"""Terraform with the real hashicorp/aws provider (5.100, from the machine's
filesystem mirror) against a real Berth: every aws_ecr_* resource and data
source whose feature Berth has, plus aws_kms_key (Berth's KMS face) and
aws_caller_identity (its STS face). The provider runs as users run it:
credentials validated and the account id requested through STS, no skip flags.

The steps, in order (each test is one; later ones need the earlier):
1. apply, then `plan -detailed-exitcode` shows no changes;
2. apply a change (scan on push, tag mutability, lifecycle policy, tags),
   then plan clean again;
3. docker push to the repository Terraform made, logged in with the
   authorization token data source;
4. a fresh state: `terraform import` of the repository and import blocks for
   every other importable resource; the import plan may differ only in
   attributes no AWS API returns (provider-side settings), then apply and
   plan clean; `data.aws_ecr_image` finds what docker pushed;
5. destroy, and boto3 sees nothing left.

Embedded backend only: every terraform command loads the 700 MB provider
(8 to 15 s each), so one pass takes over two minutes; the scale-out run
would double it for wire behaviour the ECR suite already covers there.
"""

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, ROOT_KEY_ID, ROOT_SECRET, scale_out

pytestmark = pytest.mark.skipif(
    scale_out(), reason="Terraform runs on the embedded backend only (see the module docstring)"
)

PLUGINS = Path("/opt/tf-plugins")
PROVIDER = PLUGINS / "registry.terraform.io/hashicorp/aws/5.100.0"
OTHER_ACCOUNT = "210987654321"

# The configuration under test. Variables carry what step 2 changes, so every
# step applies the same text.
MAIN_TF = r"""
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "5.100.0" }
  }
}

variable "endpoint" { type = string }
variable "scan_on_push" { type = bool }
variable "mutability" { type = string }
variable "keep" { type = number }
variable "tags" { type = map(string) }
variable "scan_type" { type = string }
variable "scan_frequency" { type = string }
variable "key_rotation" { type = bool }
variable "replicate_prefix" { type = string }
variable "template_description" { type = string }

provider "aws" {
  region = "us-east-1"
  endpoints {
    ecr = var.endpoint
    kms = var.endpoint
    sts = var.endpoint
  }
  default_tags {
    tags = { managed_by = "terraform" }
  }
}

data "aws_caller_identity" "me" {}

resource "aws_kms_key" "repos" {
  description             = "tf repositories"
  deletion_window_in_days = 7
  enable_key_rotation     = var.key_rotation
}

resource "aws_ecr_repository" "app" {
  name                 = "tf/app"
  image_tag_mutability = var.mutability
  force_delete         = true
  image_scanning_configuration {
    scan_on_push = var.scan_on_push
  }
  encryption_configuration {
    encryption_type = "AES256"
  }
  tags = var.tags
}

resource "aws_ecr_repository" "secure" {
  name                 = "tf/secure"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = true
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.repos.arn
  }
}

# KMS without a key: ECR's managed aws/ecr key, reported back (a computed
# attribute the plan must not see change).
resource "aws_ecr_repository" "managed" {
  name = "tf/managed-key"
  encryption_configuration {
    encryption_type = "KMS"
  }
}

data "aws_ecr_lifecycle_policy_document" "keep" {
  rule {
    priority    = 1
    description = "keep the newest images"
    selection {
      tag_status   = "any"
      count_type   = "imageCountMoreThan"
      count_number = var.keep
    }
  }
}

resource "aws_ecr_lifecycle_policy" "app" {
  repository = aws_ecr_repository.app.name
  policy     = data.aws_ecr_lifecycle_policy_document.keep.json
}

resource "aws_ecr_repository_policy" "app" {
  repository = aws_ecr_repository.app.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "pull"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.me.account_id}:root" }
      Action    = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    }]
  })
}

resource "aws_ecr_registry_policy" "registry" {
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "replicate"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::OTHER_ACCOUNT:root" }
      Action    = ["ecr:CreateRepository", "ecr:ReplicateImage"]
      Resource  = "arn:aws:ecr:us-east-1:${data.aws_caller_identity.me.account_id}:repository/*"
    }]
  })
}

resource "aws_ecr_registry_scanning_configuration" "scanning" {
  scan_type = var.scan_type
  rule {
    scan_frequency = var.scan_frequency
    repository_filter {
      filter      = "tf/scanned-*"
      filter_type = "WILDCARD"
    }
  }
}

resource "aws_ecr_account_setting" "policy_scope" {
  name  = "REGISTRY_POLICY_SCOPE"
  value = "V2"
}

resource "aws_ecr_account_setting" "basic_scan" {
  name  = "BASIC_SCAN_TYPE_VERSION"
  value = "AWS_NATIVE"
}

# Replication to another account of this deployment, and the settings of
# the repositories replication creates in this registry.
resource "aws_ecr_replication_configuration" "replication" {
  replication_configuration {
    rule {
      destination {
        region      = "us-east-1"
        registry_id = "OTHER_ACCOUNT"
      }
      repository_filter {
        filter      = var.replicate_prefix
        filter_type = "PREFIX_MATCH"
      }
    }
  }
}

resource "aws_ecr_repository_creation_template" "replicated" {
  prefix               = "replicated"
  description          = var.template_description
  image_tag_mutability = "IMMUTABLE"
  applied_for          = ["REPLICATION"]
  resource_tags        = { team = "platform" }
  lifecycle_policy     = data.aws_ecr_lifecycle_policy_document.keep.json
  encryption_configuration {
    encryption_type = "AES256"
  }
}

# A pull-through cache of quay.io (nothing is fetched until a pull).
resource "aws_ecr_pull_through_cache_rule" "cache" {
  ecr_repository_prefix = "tf-cache"
  upstream_registry_url = "quay.io"
}

data "aws_ecr_repository" "app" {
  name = aws_ecr_repository.app.name
}

data "aws_ecr_repository" "secure" {
  name = aws_ecr_repository.secure.name
}

data "aws_ecr_repositories" "all" {
  depends_on = [aws_ecr_repository.app, aws_ecr_repository.secure, aws_ecr_repository.managed]
}

data "aws_ecr_authorization_token" "token" {}

output "account" { value = data.aws_caller_identity.me.account_id }
output "caller_arn" { value = data.aws_caller_identity.me.arn }
output "caller_user_id" { value = data.aws_caller_identity.me.user_id }
output "app_arn" { value = aws_ecr_repository.app.arn }
output "app_url" { value = aws_ecr_repository.app.repository_url }
output "app_registry" { value = aws_ecr_repository.app.registry_id }
output "key_arn" { value = aws_kms_key.repos.arn }
output "key_id" { value = aws_kms_key.repos.key_id }
output "data_app_url" { value = data.aws_ecr_repository.app.repository_url }
output "data_app_mutability" { value = data.aws_ecr_repository.app.image_tag_mutability }
output "data_secure_key" { value = data.aws_ecr_repository.secure.encryption_configuration[0].kms_key }
output "managed_key" { value = aws_ecr_repository.managed.encryption_configuration[0].kms_key }
output "names" { value = data.aws_ecr_repositories.all.names }
output "proxy_endpoint" { value = data.aws_ecr_authorization_token.token.proxy_endpoint }
output "token_user" { value = data.aws_ecr_authorization_token.token.user_name }
""".replace("OTHER_ACCOUNT", OTHER_ACCOUNT)

# Step 4's additions: the image docker pushed, read by a data source.
IMAGE_TF = r"""
data "aws_ecr_image" "v1" {
  repository_name = "tf/app"
  image_tag       = "v1"
}

data "aws_ecr_image" "latest" {
  repository_name = "tf/app"
  most_recent     = true
}

output "image_digest" { value = data.aws_ecr_image.v1.image_digest }
output "latest_digest" { value = data.aws_ecr_image.latest.image_digest }
output "image_size" { value = data.aws_ecr_image.v1.image_size_in_bytes }
output "image_uri" { value = data.aws_ecr_image.v1.image_uri }
output "image_tags" { value = data.aws_ecr_image.v1.image_tags }
output "most_recent_tags" { value = data.aws_ecr_repository.app.most_recent_image_tags }
"""

FIRST = {
    "scan_on_push": False, "mutability": "MUTABLE", "keep": 10, "tags": {"team": "platform", "env": "test"},
    "scan_type": "BASIC", "scan_frequency": "SCAN_ON_PUSH", "key_rotation": False,
    "replicate_prefix": "tf/", "template_description": "replicated repositories",
}
CHANGED = {
    "scan_on_push": True, "mutability": "IMMUTABLE", "keep": 5, "tags": {"team": "platform", "owner": "ci"},
    "scan_type": "ENHANCED", "scan_frequency": "CONTINUOUS_SCAN", "key_rotation": True,
    "replicate_prefix": "tf/app", "template_description": "repositories replication creates",
}
# The provider's default_tags, on every resource that has tags.
DEFAULT_TAGS = {"managed_by": "terraform"}

# Attributes that live only in Terraform's state (no AWS API returns them),
# so an import cannot know them and the plan after it sets them.
STATE_ONLY = {
    "aws_ecr_repository": {"force_delete"},
    "aws_kms_key": {"deletion_window_in_days", "bypass_policy_lockout_safety_check"},
}


def terraform_binary():
    path = shutil.which("terraform")
    assert path, "terraform is not on PATH (the machine image provides Terraform 1.11; .ci/run checks it)"
    out = subprocess.run([path, "version", "-json"], capture_output=True, text=True, timeout=60)
    version = json.loads(out.stdout)["terraform_version"]
    assert version.startswith("1.11."), f"Terraform 1.11.x expected, found {version}"
    assert PROVIDER.is_dir(), f"the hashicorp/aws 5.100.0 provider is not at {PROVIDER}"
    return path


class Terraform:
    """One working directory, run with the machine's provider mirror and
    Berth's root key in the environment (as a user's shell would have it)."""

    def __init__(self, binary, root: Path, berth, files):
        self.binary = binary
        self.dir = root
        self.dir.mkdir(parents=True)
        for name, text in files.items():
            (self.dir / name).write_text(text)
        (self.dir / "cli.tfrc").write_text(
            'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' % PLUGINS
        )
        self.endpoint = berth.endpoint
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.dir),
            "TF_CLI_CONFIG_FILE": str(self.dir / "cli.tfrc"),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "AWS_ACCESS_KEY_ID": ROOT_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": ROOT_SECRET,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.log = []

    def vars(self, values):
        (self.dir / "terraform.tfvars.json").write_text(json.dumps({"endpoint": self.endpoint, **values}))

    def run(self, *args, ok=(0,), timeout=300):
        start = time.monotonic()
        out = subprocess.run(
            [self.binary, *args, "-no-color"] if args[0] not in ("output", "show") else [self.binary, *args],
            cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        self.log.append((args[0], round(time.monotonic() - start, 1)))
        assert out.returncode in ok, f"terraform {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        return out

    def apply(self, *extra):
        return self.run("apply", "-auto-approve", *extra)

    def plan_is_clean(self):
        out = self.run("plan", "-detailed-exitcode", ok=(0, 2))
        assert out.returncode == 0, f"the plan after apply is not empty:\n{out.stdout}"
        assert "No changes." in out.stdout, out.stdout

    def data_source(self, address):
        """The values a data source read, from the state (its sensitive ones too)."""
        state = json.loads(self.run("show", "-json").stdout)
        found = [r for r in state["values"]["root_module"]["resources"] if r["address"] == address]
        assert found, f"{address} is not in the state"
        return found[0]["values"]

    def outputs(self):
        out = self.run("output", "-json")
        return {k: v["value"] for k, v in json.loads(out.stdout).items()}


@pytest.fixture(scope="module")
def tf(berth, tmp_path_factory):
    binary = terraform_binary()
    root = tmp_path_factory.mktemp("terraform")
    state = {"binary": binary, "root": root}
    first = Terraform(binary, root / "main", berth, {"main.tf": MAIN_TF})
    first.run("init", "-input=false")
    state["main"] = first
    yield state
    # Whatever a failed step left behind goes with the server; log the timings.
    for t in (state.get("main"), state.get("imported")):
        if t is not None:
            print(f"terraform timings ({t.dir.name}): {t.log}")
    image = state.get("image")
    if image:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, timeout=60)


def repository(ecr, name):
    return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]


def tags(ecr, arn):
    return {t["Key"]: t["Value"] for t in ecr.list_tags_for_resource(resourceArn=arn)["tags"]}


def keep_count(ecr, name):
    text = ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"]
    return json.loads(text)["rules"][0]["selection"]["countNumber"]


def test_apply_creates_everything_and_plans_clean(tf, berth, ecr):
    t = tf["main"]
    t.vars(FIRST)
    t.apply()
    t.plan_is_clean()
    out = t.outputs()
    # The provider learnt the account and partition from STS.
    assert out["account"] == ACCOUNT
    assert out["caller_arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert out["caller_user_id"] == ACCOUNT
    assert out["app_arn"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/tf/app"
    assert out["app_registry"] == ACCOUNT
    assert out["app_url"] == out["data_app_url"] == f"{berth.addr}/tf/app"
    assert out["data_app_mutability"] == "MUTABLE"
    assert sorted(out["names"]) == ["tf/app", "tf/managed-key", "tf/secure"]
    assert out["data_secure_key"] == out["key_arn"]
    managed = repository(ecr, "tf/managed-key")["encryptionConfiguration"]
    assert managed["encryptionType"] == "KMS"
    assert out["managed_key"] == managed["kmsKey"] and managed["kmsKey"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    assert out["proxy_endpoint"] == berth.endpoint
    assert out["token_user"] == "AWS"
    # What Berth holds is what the configuration says.
    app = repository(ecr, "tf/app")
    assert app["imageTagMutability"] == "MUTABLE"
    assert app["imageScanningConfiguration"] == {"scanOnPush": False}
    assert app["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert tags(ecr, app["repositoryArn"]) == {**FIRST["tags"], **DEFAULT_TAGS}
    assert keep_count(ecr, "tf/app") == 10
    secure = repository(ecr, "tf/secure")
    assert secure["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": out["key_arn"]}
    policy = json.loads(ecr.get_repository_policy(repositoryName="tf/app")["policyText"])
    assert policy["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    registry = json.loads(ecr.get_registry_policy()["policyText"])
    assert registry["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}
    scanning = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    assert scanning["rules"] == [
        {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "tf/scanned-*", "filterType": "WILDCARD"}]}
    ]
    assert ecr.get_account_setting(name="REGISTRY_POLICY_SCOPE")["value"] == "V2"
    rules = ecr.describe_registry()["replicationConfiguration"]["rules"]
    assert rules == [{"destinations": [{"region": REGION, "registryId": OTHER_ACCOUNT}],
                      "repositoryFilters": [{"filter": "tf/", "filterType": "PREFIX_MATCH"}]}]
    template = ecr.describe_repository_creation_templates(prefixes=["replicated"])["repositoryCreationTemplates"][0]
    assert (template["imageTagMutability"], template["appliedFor"]) == ("IMMUTABLE", ["REPLICATION"])
    cache = ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["tf-cache"])["pullThroughCacheRules"][0]
    assert cache["upstreamRegistryUrl"] == "quay.io"
    assert template["description"] == "replicated repositories"
    key = berth.client(service="kms").describe_key(KeyId=out["key_id"])["KeyMetadata"]
    assert (key["Description"], key["KeyState"]) == ("tf repositories", "Enabled")
    kms_tags = berth.client(service="kms").list_resource_tags(KeyId=out["key_id"])["Tags"]
    assert {t["TagKey"]: t["TagValue"] for t in kms_tags} == DEFAULT_TAGS


def test_a_change_applies_and_plans_clean(tf, berth, ecr):
    t = tf["main"]
    t.vars(CHANGED)
    t.apply()
    t.plan_is_clean()
    app = repository(ecr, "tf/app")
    assert app["imageTagMutability"] == "IMMUTABLE"
    assert app["imageScanningConfiguration"] == {"scanOnPush": True}
    assert tags(ecr, app["repositoryArn"]) == {**CHANGED["tags"], **DEFAULT_TAGS}
    assert keep_count(ecr, "tf/app") == 5
    scanning = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    assert scanning["scanType"] == "ENHANCED"
    assert [r["scanFrequency"] for r in scanning["rules"]] == ["CONTINUOUS_SCAN"]
    rules = ecr.describe_registry()["replicationConfiguration"]["rules"]
    assert rules[0]["repositoryFilters"] == [{"filter": "tf/app", "filterType": "PREFIX_MATCH"}]
    template = ecr.describe_repository_creation_templates(prefixes=["replicated"])["repositoryCreationTemplates"][0]
    assert template["description"] == "repositories replication creates"
    kms = berth.client(service="kms")
    assert kms.get_key_rotation_status(KeyId=tf["main"].outputs()["key_id"])["KeyRotationEnabled"] is True


def test_docker_pushes_to_the_repository_terraform_made(tf, berth, ecr, tmp_path):
    # The account the replication rule Terraform made copies to, granting it.
    other_key = berth.iam("create-account", "--account-id", OTHER_ACCOUNT)
    other = berth.client(other_key["AccessKeyId"], other_key["SecretAccessKey"])
    other.put_registry_policy(policyText=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                       "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"], "Resource": "*"}],
    }))
    out = tf["main"].outputs()
    image = f"{out['app_url']}:v1"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text(f"built for the terraform test {uuid.uuid4()}\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY app.txt /app.txt\n")
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "docker-config"))

    def docker(*args, stdin=None):
        r = subprocess.run(["docker", *args], input=stdin, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"docker {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    registry = out["proxy_endpoint"].removeprefix("http://")
    # The token as the data source read it (a fresh one on every read, as
    # ECR's: so it is no output, which would differ in every plan).
    token = tf["main"].data_source("data.aws_ecr_authorization_token.token")
    assert token["user_name"] == out["token_user"] == "AWS"
    docker("login", "--username", token["user_name"], "--password-stdin", registry, stdin=token["password"])
    tf["image"] = image
    docker("build", "-q", "-t", image, str(ctx))
    pushed = docker("push", image)
    digest = next(w for w in pushed.split() if w.startswith("sha256:"))
    tf["digest"] = digest
    # The rule Terraform made replicates the push.
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        status = ecr.describe_image_replication_status(repositoryName="tf/app", imageId={"imageDigest": digest})
        if [s["status"] for s in status["replicationStatuses"]] == ["COMPLETE"]:
            break
        time.sleep(0.3)
    assert status["replicationStatuses"] == [{"region": REGION, "registryId": OTHER_ACCOUNT, "status": "COMPLETE"}]
    copied = other.batch_get_image(repositoryName="tf/app", imageIds=[{"imageTag": "v1"}])["images"]
    assert copied[0]["imageId"]["imageDigest"] == digest


def test_a_fresh_state_imports_everything_without_drift(tf, berth):
    key_id = tf["main"].outputs()["key_id"]
    imports = {
        "aws_kms_key.repos": key_id,
        "aws_ecr_repository.secure": "tf/secure",
        "aws_ecr_repository.managed": "tf/managed-key",
        "aws_ecr_lifecycle_policy.app": "tf/app",
        "aws_ecr_repository_policy.app": "tf/app",
        "aws_ecr_registry_policy.registry": ACCOUNT,
        "aws_ecr_registry_scanning_configuration.scanning": ACCOUNT,
        "aws_ecr_account_setting.policy_scope": "REGISTRY_POLICY_SCOPE",
        "aws_ecr_account_setting.basic_scan": "BASIC_SCAN_TYPE_VERSION",
        "aws_ecr_replication_configuration.replication": ACCOUNT,
        "aws_ecr_repository_creation_template.replicated": "replicated",
        "aws_ecr_pull_through_cache_rule.cache": "tf-cache",
    }
    blocks = "".join(f'import {{\n  to = {to}\n  id = "{id_}"\n}}\n' for to, id_ in imports.items())
    t = Terraform(tf["binary"], tf["root"] / "imported", berth,
                  {"main.tf": MAIN_TF, "image.tf": IMAGE_TF, "imports.tf": blocks})
    tf["imported"] = t
    t.vars(CHANGED)
    t.run("init", "-input=false")
    # The classic command for one resource, import blocks for the others.
    t.run("import", "aws_ecr_repository.app", "tf/app")
    t.run("plan", "-out=import.tfplan")
    plan = json.loads(t.run("show", "-json", "import.tfplan").stdout)
    importing = set()
    for rc in plan["resource_changes"]:
        if rc["mode"] != "managed":
            continue
        change = rc["change"]
        if change.get("importing"):
            importing.add(rc["address"])
        before, after = change["before"] or {}, change["after"] or {}
        differ = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert differ <= STATE_ONLY.get(rc["type"], set()), (
            f"{rc['address']}: what Berth answered differs from the configuration in {sorted(differ)}:\n"
            f"{json.dumps({k: (before.get(k), after.get(k)) for k in differ}, indent=1)}"
        )
        assert change["actions"] in (["no-op"], ["update"]), (rc["address"], change["actions"])
    assert importing == set(imports), importing
    t.run("apply", "import.tfplan")
    t.plan_is_clean()
    out = t.outputs()
    assert out["image_digest"] == out["latest_digest"] == tf["digest"]
    assert out["image_size"] > 0
    assert out["image_uri"] == f"{berth.addr}/tf/app@{tf['digest']}"
    assert out["image_tags"] == ["v1"]
    assert out["most_recent_tags"] == ["v1"]


def test_destroy_leaves_nothing(tf, berth, ecr):
    t = tf["imported"]
    key_id = t.outputs()["key_id"]
    out = t.run("destroy", "-auto-approve")
    assert "Resources: 13 destroyed." in out.stdout, out.stdout
    assert ecr.describe_repositories()["repositories"] == []
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []
    assert ecr.describe_pull_through_cache_rules()["pullThroughCacheRules"] == []
    with pytest.raises(ClientError) as e:
        ecr.get_registry_policy()
    assert e.value.response["Error"]["Code"] == "RegistryPolicyNotFoundException"
    scanning = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    assert scanning == {"scanType": "BASIC", "rules": []}
    key = berth.client(service="kms").describe_key(KeyId=key_id)["KeyMetadata"]
    assert key["KeyState"] == "PendingDeletion"
    # Account settings have no "unset" (the provider's delete is a no-op):
    # they keep the values the configuration gave, Berth's defaults.
    assert ecr.get_account_setting(name="REGISTRY_POLICY_SCOPE")["value"] == "V2"
    assert ecr.get_account_setting(name="BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"

"""The users' guides' CDK app: one ECR repository, `todo-service`, in a stack
named EcrStack, synthesized as `cdk synth` does it: the default synthesizer
(so the template carries the BootstrapVersion SSM parameter and the
CheckBootstrapVersion rule) and analytics reporting on (the AWS::CDK::Metadata
resource, under a condition on the region).

    CDK_OUTDIR=cdk.out python3 tests/cdk/ecr_stack.py            # the guide's stack
    CDK_OUTDIR=/tmp/out python3 tests/cdk/ecr_stack.py guide update

With variant names on the command line, each is synthesized into
`$CDK_OUTDIR/<variant>/EcrStack.template.json` (one Node.js process for all,
which is where the time goes). The variants:
- `guide`: the guide's repository, tag mutability MUTABLE, CDK's default
  removal policy (Retain);
- `update`: the same repository changed: IMMUTABLE tags, a lifecycle rule
  keeping 5 images, a `team` tag, and `RemovalPolicy.DESTROY` with
  `empty_on_delete=True`, so deleting the stack deletes it, images and all;
- `legacy`: the guide's stack with `LegacyStackSynthesizer`, whose template
  has no BootstrapVersion parameter and no rule.

Needs `pip install aws-cdk-lib constructs` and Node.js; no CDK CLI.
"""

import os
import sys

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from constructs import Construct

VARIANTS = ("guide", "update", "legacy")
REPOSITORY_NAME = os.environ.get("ECR_STACK_REPOSITORY_NAME", "todo-service")


class EcrStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, variant: str = "guide", **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if variant in ("guide", "legacy"):
            changes = {"image_tag_mutability": ecr.TagMutability.MUTABLE}
        elif variant == "update":
            changes = {
                "image_tag_mutability": ecr.TagMutability.IMMUTABLE,
                "lifecycle_rules": [ecr.LifecycleRule(description="keep 5", max_image_count=5)],
                "removal_policy": cdk.RemovalPolicy.DESTROY,
                "empty_on_delete": True,
            }
        else:
            raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        repo = ecr.Repository(self, "TodoServiceRepo", repository_name=REPOSITORY_NAME, **changes)
        if variant == "update":
            cdk.Tags.of(repo).add("team", "platform")
        cdk.CfnOutput(self, "RepositoryUri", value=repo.repository_uri)
        cdk.CfnOutput(self, "RepositoryArn", value=repo.repository_arn)


def synth(variant: str, outdir: str) -> str:
    """Synthesize `variant` into `outdir`; the template's path."""
    # As `cdk synth` does by default: with the AWS::CDK::Metadata resource.
    app = cdk.App(outdir=outdir, analytics_reporting=True)
    synthesizer = cdk.LegacyStackSynthesizer() if variant == "legacy" else None
    EcrStack(app, "EcrStack", variant=variant, synthesizer=synthesizer)
    assembly = app.synth()
    return os.path.join(assembly.directory, assembly.get_stack_by_name("EcrStack").template_file)


def main(argv):
    outdir = os.environ.get("CDK_OUTDIR", "cdk.out")
    if not argv:
        print(synth("guide", outdir))
        return
    for variant in argv:
        print(synth(variant, os.path.join(outdir, variant)))


if __name__ == "__main__":
    main(sys.argv[1:])

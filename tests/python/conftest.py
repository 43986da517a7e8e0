"""Harness for the boto3 / aws CLI suite: starts the real `berth` binary in ECR
mode (account 123456789012, root key AKIAIOSFODNN7EXAMPLE) on a free loopback
port with a fresh data directory, one server per test module.

The binary comes from $BERTH_BIN (default target/debug/berth, relative to the
repository root).
"""

import hashlib
import itertools
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ACCOUNT = "123456789012"
ROOT_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
ROOT_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"

REPO_ROOT = Path(__file__).resolve().parents[2]


def berth_bin():
    path = Path(os.environ.get("BERTH_BIN", "target/debug/berth"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        raise RuntimeError(f"berth binary not found at {path}; build it or set BERTH_BIN")
    return str(path)


def service_var(name):
    """A variable of the test services: the environment, else the file
    tests/services/start.sh writes (target/test-services.env)."""
    if os.environ.get(name):
        return os.environ[name]
    path = Path(os.environ.get("BERTH_TEST_SERVICES", REPO_ROOT / "target" / "test-services.env"))
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == name:
                return value.strip()
    return None


def scale_out():
    """Whether this run's servers use the scale-out backend (BERTH_TEST_BACKEND=scale-out)."""
    return os.environ.get("BERTH_TEST_BACKEND") == "scale-out"


def need_service(name):
    value = service_var(name)
    if not value:
        raise RuntimeError(f"the scale-out tests need the test servers: run tests/services/start.sh (CI does); {name} is not set")
    return value


def fresh_postgres_database():
    server = service_var("BERTH_TEST_POSTGRES")
    if not server:
        raise RuntimeError("the scale-out tests need PostgreSQL: run tests/services/start.sh (CI does)")
    name = "berth_t_" + uuid.uuid4().hex[:16]
    subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return server.rsplit("/", 1)[0] + "/" + name


def aws_cli(endpoint, *args, faketime=None, key_id=ROOT_KEY_ID, secret=ROOT_SECRET, timeout=60):
    """`aws ARGS --endpoint-url ENDPOINT --output json` signed with `key_id`
    (nothing from the user's own AWS config or `AWS_*` variables), optionally
    under `faketime -f FAKETIME`; the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=key_id,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_PAGER="",
    )
    argv = ["aws", *args, "--endpoint-url", endpoint, "--output", "json"]
    if faketime:
        argv = ["faketime", "-f", faketime, *argv]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def upload_blob(ecr, repo, data: bytes):
    """Upload `data` to `repo` through the ECR API (in one part), unless it
    is there already; its digest."""
    have = ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[sha256(data)])
    if have["layers"] and have["layers"][0].get("layerAvailability") == "AVAILABLE":
        return sha256(data)
    up = ecr.initiate_layer_upload(repositoryName=repo)
    ecr.upload_layer_part(
        repositoryName=repo, uploadId=up["uploadId"], partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data
    )
    ecr.complete_layer_upload(repositoryName=repo, uploadId=up["uploadId"], layerDigests=[sha256(data)])
    return sha256(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Berth:
    """A running `berth serve` in ECR mode."""

    def __init__(self, tmp: Path, extra_args=(), reuse=None, wrapper=(), port=None):
        """`extra_args` go to `berth serve` after the defaults (e.g.
        `["--gc-grace", "1s"]`); none by default. `reuse`: a stopped server
        whose stores (data directory, database, S3 prefix) this one opens.
        `wrapper`: a command the server runs under (e.g. `["faketime", "-f", "+8d"]`).
        `port`: listen on this port (a restarted server where others expect it)."""
        self.bin = berth_bin()
        self.data_dir = tmp / "data"
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.endpoint = f"http://{self.addr}"
        self.log_path = tmp / "berth.log"
        # Where the state is, for the server and for every `berth` command run beside it.
        self.store_args = ["--data-dir", str(self.data_dir)]
        self.env = dict(
            os.environ,
            BERTH_ACCOUNT_ID=ACCOUNT,
            BERTH_ROOT_ACCESS_KEY_ID=ROOT_KEY_ID,
            BERTH_ROOT_SECRET_ACCESS_KEY=ROOT_SECRET,
            BERTH_LOG="warn",
        )
        # On the scale-out backend: a fresh database and S3 key prefix.
        self.s3_prefix = None
        if scale_out():
            self.s3_prefix = f"py-{uuid.uuid4().hex}"
            self.store_args += [
                "--database-url", fresh_postgres_database(),
                "--storage-url", f"s3://{need_service('BERTH_TEST_S3_BUCKET')}/{self.s3_prefix}/",
            ]
            self.env.update(
                AWS_ENDPOINT_URL_S3=need_service("BERTH_TEST_S3_ENDPOINT"),
                AWS_ACCESS_KEY_ID=need_service("BERTH_TEST_S3_ACCESS_KEY"),
                AWS_SECRET_ACCESS_KEY=need_service("BERTH_TEST_S3_SECRET_KEY"),
                AWS_REGION="us-east-1",
            )
        if reuse is not None:
            self.data_dir, self.store_args = reuse.data_dir, reuse.store_args
            self.s3_prefix, self.env = reuse.s3_prefix, reuse.env
        tmp.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*wrapper, self.bin, "serve", "--listen", self.addr, *self.store_args, *extra_args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berth exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"berth did not listen on {self.addr}:\n{self.log()}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()

    # ---- storage -----------------------------------------------------------

    def blob_stored(self, digest):
        """Whether the storage holds blob `digest` (a file in the data
        directory, or an object under the S3 prefix)."""
        alg, hex_ = digest.split(":", 1)
        if self.s3_prefix is None:
            # Sealed blobs, or plaintext ones of a data directory older than encryption.
            return any(
                Path(self.data_dir).joinpath("storage", *sub, alg, hex_[:2], hex_).is_file()
                for sub in (("sealed", "blobs"), ("blobs",))
            )
        s3 = boto3.session.Session().client(
            "s3",
            region_name="us-east-1",
            endpoint_url=need_service("BERTH_TEST_S3_ENDPOINT"),
            aws_access_key_id=need_service("BERTH_TEST_S3_ACCESS_KEY"),
            aws_secret_access_key=need_service("BERTH_TEST_S3_SECRET_KEY"),
            config=Config(s3={"addressing_style": "path"}),
        )
        for sub in ("sealed/blobs", "blobs"):
            key = f"{self.s3_prefix}/{sub}/{alg}/{hex_[:2]}/{hex_}"
            try:
                s3.head_object(Bucket=need_service("BERTH_TEST_S3_BUCKET"), Key=key)
                return True
            except s3.exceptions.ClientError as e:
                if e.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                    raise
        return False

    # ---- clients -----------------------------------------------------------

    def client(self, key_id=ROOT_KEY_ID, secret=ROOT_SECRET, validate=True, service="ecr"):
        """An ECR client (or, with `service="kms"`, a KMS one: the same
        endpoint); `validate=False` turns off botocore's client-side checks
        so that the server's own validation is exercised."""
        return boto3.session.Session().client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(
                retries={"max_attempts": 1, "mode": "legacy"},
                parameter_validation=validate,
                connect_timeout=10,
                read_timeout=60,
            ),
        )

    def aws(self, *args, **kw):
        """The aws CLI against this server (see `aws_cli`)."""
        return aws_cli(self.endpoint, *args, **kw)

    # ---- berth iam ---------------------------------------------------------

    def iam(self, *args):
        """Run `berth iam --data-dir <dir> <args>` and return its JSON output."""
        out = subprocess.run(
            [self.bin, "iam", *self.store_args, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"berth iam {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
        return json.loads(out.stdout)

    # ---- berth gc / berth lifecycle ----------------------------------------

    def cli_run(self, group, command, *args, settings=(), faketime=None, timeout=60):
        """Run `berth <group> --data-dir <dir> <settings> <command> <args>`
        beside the live server, optionally under `faketime -f <faketime>`
        (e.g. "+3d"). Returns the CompletedProcess."""
        argv = [self.bin, group, *self.store_args, *settings, command, *args]
        if faketime is not None:
            argv = ["faketime", "-f", faketime, *argv]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)

    def cli(self, group, command, *args, **kw):
        """`cli_run`, checked, with its stdout parsed as JSON."""
        out = self.cli_run(group, command, *args, **kw)
        if out.returncode != 0:
            raise RuntimeError(
                f"berth {group} {command} {' '.join(args)} failed ({out.returncode}):\n{out.stderr}"
            )
        return json.loads(out.stdout)

    def user_with_policy(self, policy=None, account=ACCOUNT, service="ecr"):
        """A fresh IAM user (optionally with an inline policy) and a client
        (of `service`) signed with a fresh key of it."""
        name, arn, key_id, secret = self.user_key(policy, account)
        return name, arn, self.client(key_id, secret, service=service)

    def user_key(self, policy=None, account=ACCOUNT):
        """A fresh IAM user (optionally with an inline policy) and a fresh
        access key of it: (name, arn, key id, secret). The key is created
        after the policy, so the server's per-key cache cannot hold a stale
        view."""
        name = f"user-{uuid.uuid4().hex[:10]}"
        self.iam("create-user", "--account-id", account, "--user-name", name)
        if policy is not None:
            self.iam(
                "put-user-policy",
                "--account-id", account,
                "--user-name", name,
                "--policy-name", "inline",
                "--policy-document", json.dumps(policy),
            )
        key = self.iam("create-access-key", "--account-id", account, "--user-name", name)["AccessKey"]
        arn = f"arn:aws:iam::{account}:user/{name}"
        return name, arn, key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def berth(tmp_path_factory):
    server = Berth(tmp_path_factory.mktemp("berth"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ecr(berth):
    """The root client of account 123456789012."""
    return berth.client()


@pytest.fixture(scope="module")
def ecr_raw(berth):
    """The root client without botocore's parameter validation."""
    return berth.client(validate=False)


_counter = itertools.count()


@pytest.fixture
def name(request):
    """A repository name unique to the test (callable for more than one)."""
    base = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")
    base = "".join(c for c in base if c.isalnum() or c == "-").strip("-")[:40].strip("-")

    def make(suffix=""):
        n = f"{base}-{next(_counter)}"
        return f"{n}-{suffix}" if suffix else n

    return make

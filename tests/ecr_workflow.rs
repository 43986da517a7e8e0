//! End-to-end ECR workflows with the real tools: the AWS CLI (v1) talks to
//! Berth's ECR API, docker / skopeo talk to its `/v2/` API with the tokens the
//! CLI obtained, and `berth iam` manages users, keys and accounts.
//!
//! The tools are required: a missing binary fails the test. Every external
//! command is bounded by `timeout`; nothing from the machine's AWS or Docker
//! configuration is used (each test has its own DOCKER_CONFIG directories and
//! `AWS_CONFIG_FILE=/dev/null`). Images are built offline (`FROM scratch`),
//! tagged with the test server's unique `127.0.0.1:PORT`, and removed from the
//! docker engine by a drop guard.
//!
//! Run: `cargo test --test ecr_workflow -- --test-threads=2`

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ACCOUNT, ROOT_KEY_ID, ROOT_SECRET, Server, require, sha256, tail};

/// Upper bound (seconds) for any single external command.
const CMD_TIMEOUT: &str = "300";
const REGION: &str = "us-east-1";
const V2S2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const SECOND_ACCOUNT: &str = "222222222222";

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// stdout and stderr of a finished command, as one text.
fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Variables that could make a tool use something of the machine's.
const SCRUBBED_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "DOCKER_CONFIG",
    "DOCKER_HOST_CONFIG",
    "REGISTRY_AUTH_FILE",
    "FAKETIME",
    "LD_PRELOAD",
];

/// A program with fixed leading arguments and environment.
#[derive(Clone)]
struct Tool {
    prog: String,
    base: Vec<String>,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
}

impl Tool {
    fn new(prog: &str) -> Tool {
        if !prog.contains('/') {
            require(prog);
        }
        Tool {
            prog: prog.to_string(),
            base: vec![],
            env: vec![],
            dir: None,
        }
    }

    fn args<S: AsRef<str>>(mut self, args: &[S]) -> Tool {
        self.base
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    fn env(mut self, k: &str, v: impl AsRef<str>) -> Tool {
        self.env.push((k.to_string(), v.as_ref().to_string()));
        self
    }

    fn dir(mut self, dir: &Path) -> Tool {
        self.dir = Some(dir.to_path_buf());
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "10", CMD_TIMEOUT, &self.prog])
            .args(&self.base)
            .args(args);
        for k in SCRUBBED_ENV {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c
    }

    fn describe(&self, args: &[&str]) -> String {
        let mut v = vec![self.prog.clone()];
        v.extend(self.base.iter().cloned());
        v.extend(args.iter().map(|s| s.to_string()));
        v.join(" ")
    }

    /// Run with `input` on stdin; return the output, whatever the exit status.
    fn output_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        use std::io::Write;
        let start = Instant::now();
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.describe(args)));
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().expect("piped stdin");
            // The program may exit before reading everything; that shows in its status.
            let _ = stdin.write_all(bytes);
            drop(stdin);
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for `{}`: {e}", self.describe(args)));
        eprintln!(
            "[{:>6.2}s] {} -> {}",
            start.elapsed().as_secs_f64(),
            self.describe(args),
            out.status
        );
        out
    }

    fn output(&self, args: &[&str]) -> Output {
        self.output_with_input(args, None)
    }

    fn check(&self, args: &[&str], out: Output) -> Output {
        if !out.status.success() {
            panic!(
                "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                self.describe(args),
                tail(&out.stdout, 20_000),
                tail(&out.stderr, 20_000)
            );
        }
        out
    }

    /// Run, panic with stdout/stderr on failure, return stdout as text.
    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        String::from_utf8_lossy(&self.check(args, out).stdout).into_owned()
    }

    /// Run with `input` on stdin, panic on failure, return stdout + stderr.
    fn run_with_input(&self, args: &[&str], input: &[u8]) -> String {
        let out = self.output_with_input(args, Some(input));
        text(&self.check(args, out))
    }

    /// Run, expect a failure, return stdout + stderr.
    fn fail(&self, args: &[&str]) -> String {
        self.fail_with_input(args, None)
    }

    fn fail_with_input(&self, args: &[&str], input: Option<&[u8]>) -> String {
        let out = self.output_with_input(args, input);
        let t = text(&out);
        eprintln!(
            "    (expected failure) {}",
            tail(t.trim().as_bytes(), 400).replace('\n', "\n    ")
        );
        assert!(
            !out.status.success(),
            "expected `{}` to fail, but it succeeded:\n{}",
            self.describe(args),
            tail(t.as_bytes(), 20_000)
        );
        // 124/137: killed by `timeout`, which is not the failure we are after.
        assert!(
            !matches!(out.status.code(), Some(124) | Some(137)),
            "`{}` timed out:\n{}",
            self.describe(args),
            tail(t.as_bytes(), 20_000)
        );
        t
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"))
}

/// Retry `f` until it returns `Some`, for up to `limit`.
fn retry<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still not true after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Random lower-case hex of `n` characters (unique tags, unique image content).
fn nonce(n: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; n.div_ceil(2)];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    hex::encode(b)[..n].to_string()
}

// ---------------------------------------------------------------------------
// The AWS CLI, berth iam, docker, skopeo
// ---------------------------------------------------------------------------

/// The AWS CLI pointed at `server`, signing with the given key and nothing else.
fn aws(server: &Server, key: &str, secret: &str) -> Tool {
    aws_tool(
        Tool::new("aws"),
        &format!("http://{}", server.addr),
        key,
        secret,
    )
}

fn aws_tool(t: Tool, endpoint: &str, key: &str, secret: &str) -> Tool {
    t.args(&["--endpoint-url", endpoint, "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
}

fn root_aws(server: &Server) -> Tool {
    aws(server, ROOT_KEY_ID, ROOT_SECRET)
}

/// `aws ecr get-login-password`.
fn login_password(aws: &Tool) -> String {
    let p = aws.run(&["ecr", "get-login-password"]).trim().to_string();
    assert!(p.starts_with("v1."), "unexpected registry token {p:?}");
    p
}

/// Run an `aws` command that must fail with the AWS error `code`.
fn aws_fails_with(aws: &Tool, args: &[&str], code: &str) -> String {
    let t = aws.fail(args);
    assert!(
        t.contains(code),
        "`aws {}` should fail with {code}:\n{t}",
        args.join(" ")
    );
    t
}

/// `berth iam …` on the server's data directory (while the server runs).
fn berth_iam(server: &Server) -> Tool {
    Tool::new(env!("CARGO_BIN_EXE_berth"))
        .args(&["iam", "--data-dir"])
        .args(&[server.data_dir.display().to_string()])
        .env("BERTH_LOG", "warn")
}

/// Create a user with an inline policy and an access key; returns (key, secret).
fn create_user(server: &Server, name: &str, policy: &serde_json::Value) -> (String, String) {
    let iam = berth_iam(server);
    let user = json(&iam.run(&["create-user", "--account-id", ACCOUNT, "--user-name", name]));
    assert_eq!(
        user["User"]["Arn"],
        format!("arn:aws:iam::{ACCOUNT}:user/{name}")
    );
    iam.run(&[
        "put-user-policy",
        "--account-id",
        ACCOUNT,
        "--user-name",
        name,
        "--policy-name",
        &format!("{name}-policy"),
        "--policy-document",
        &policy.to_string(),
    ]);
    let key = json(&iam.run(&[
        "create-access-key",
        "--account-id",
        ACCOUNT,
        "--user-name",
        name,
    ]));
    (
        key["AccessKey"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_string(),
        key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// A work directory; `Work::docker` gives docker clients with their own config.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// docker with its own (empty) DOCKER_CONFIG directory named `env`:
    /// logins of one environment are invisible to the others.
    fn docker(&self, env: &str) -> Tool {
        let dir = self.path(&format!("docker-config-{env}"));
        std::fs::create_dir_all(&dir).unwrap();
        if !dir.join("config.json").exists() {
            std::fs::write(dir.join("config.json"), b"{\"auths\":{}}").unwrap();
        }
        Tool::new("docker").env("DOCKER_CONFIG", dir.display().to_string())
    }

    /// skopeo with an empty auth file of its own.
    fn skopeo(&self) -> Tool {
        let auth = self.path("skopeo-auth.json");
        if !auth.exists() {
            std::fs::write(&auth, b"{\"auths\":{}}").unwrap();
        }
        Tool::new("skopeo")
            .args(&["--insecure-policy"])
            .env("REGISTRY_AUTH_FILE", auth.display().to_string())
    }
}

/// `docker login --username AWS --password-stdin ADDR`, the password on stdin
/// (what `aws ecr get-login-password | docker login …` does).
fn docker_login(docker: &Tool, addr: &str, password: &str) -> String {
    let out = docker.run_with_input(
        &["login", "--username", "AWS", "--password-stdin", addr],
        password.as_bytes(),
    );
    assert!(out.contains("Login Succeeded"), "docker login:\n{out}");
    out
}

/// Removes the docker images (by reference or ID) a test created.
struct DockerCleanup {
    docker: Tool,
    images: Vec<String>,
}

impl DockerCleanup {
    fn new(docker: &Tool) -> DockerCleanup {
        DockerCleanup {
            docker: docker.clone(),
            images: vec![],
        }
    }

    fn add(&mut self, image: &str) {
        self.images.push(image.to_string());
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        // References first (an ID with several tags needs -f otherwise).
        for i in self.images.iter().rev() {
            let _ = self.docker.output(&["rmi", "-f", i]);
        }
    }
}

/// Build a small two-layer `FROM scratch` image with unique content, the way
/// the issue does it (`docker build -t REF .` in the build context); returns
/// the image ID.
fn docker_build(docker: &Tool, ctx: &Path, reference: &str, cleanup: &mut DockerCleanup) -> String {
    std::fs::create_dir_all(ctx).unwrap();
    std::fs::write(
        ctx.join("app.txt"),
        format!("todo service build {}\n", nonce(16)),
    )
    .unwrap();
    let mut data = vec![0u8; 64 * 1024];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(ctx.join("data.bin"), &data).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY app.txt /app/app.txt\nCOPY data.bin /app/data.bin\nCMD [\"/app/app.txt\"]\n",
    )
    .unwrap();
    cleanup.add(reference);
    docker
        .clone()
        .dir(ctx)
        .run(&["build", "-q", "-t", reference, "."]);
    let id = docker
        .run(&["image", "inspect", "--format", "{{.Id}}", reference])
        .trim()
        .to_string();
    cleanup.add(&id);
    id
}

/// The manifest digest in `docker push` output ("TAG: digest: sha256:… size: N").
fn docker_push_digest(out: &str) -> String {
    let d = out
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"));
    assert!(
        d.starts_with("sha256:") && d.len() == 71,
        "bad digest {d:?}"
    );
    d.to_string()
}

fn repo_digest(docker: &Tool, reference: &str) -> String {
    docker
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{index .RepoDigests 0}}",
            reference,
        ])
        .trim()
        .to_string()
}

fn assert_image_absent(docker: &Tool, reference: &str) {
    let out = docker.output(&["image", "inspect", reference]);
    assert!(
        !out.status.success(),
        "{reference} still present in the docker engine"
    );
}

// ---------------------------------------------------------------------------
// Raw HTTP through curl
// ---------------------------------------------------------------------------

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn dump(&self) -> String {
        let mut s = format!("status {}\n", self.status);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&tail(&self.body, 4000));
        s
    }
}

/// GET `url` with `Authorization: Basic base64(AWS:<password>)` when given.
fn curl_get(url: &str, password: Option<&str>, accept: Option<&str>) -> Resp {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let body = tmp.path().join("body");
    let hdrs = tmp.path().join("headers");
    let mut args: Vec<String> = vec!["-sS".into(), "--max-time".into(), "60".into()];
    if let Some(p) = password {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{p}"));
        args.extend(["-H".into(), format!("Authorization: Basic {b}")]);
    }
    if let Some(a) = accept {
        args.extend(["-H".into(), format!("Accept: {a}")]);
    }
    args.extend([
        "-o".into(),
        body.display().to_string(),
        "-D".into(),
        hdrs.display().to_string(),
        "-w".into(),
        "%{http_code}".into(),
        url.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = Tool::new("curl").run(&args);
    let status: u16 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl status {out:?}"));
    let raw = std::fs::read_to_string(&hdrs).unwrap_or_default();
    let block = raw.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// GET /v2/ with a token (or none).
fn v2_base(addr: &str, password: Option<&str>) -> Resp {
    curl_get(&format!("http://{addr}/v2/"), password, None)
}

fn assert_basic_challenge(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}:\n{}", r.dump());
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate header:\n{}", r.dump()));
    assert!(
        challenge.starts_with("Basic realm="),
        "{what}: challenge {challenge:?} is not Basic realm=…"
    );
    let body = json(&String::from_utf8_lossy(&r.body));
    assert_eq!(
        body["errors"][0]["code"],
        "UNAUTHORIZED",
        "{what}:\n{}",
        r.dump()
    );
}

/// The v2s2 manifest served for `name:reference` (read with `token`).
fn served_manifest(addr: &str, token: &str, name: &str, reference: &str) -> Vec<u8> {
    let r = curl_get(
        &format!("http://{addr}/v2/{name}/manifests/{reference}"),
        Some(token),
        Some(V2S2),
    );
    assert_eq!(
        r.status,
        200,
        "GET manifest {name}:{reference}:\n{}",
        r.dump()
    );
    r.body
}

/// `describe-images` entry for `tag` of `repo`.
fn describe_tag(aws: &Tool, extra: &[&str], repo: &str, tag: &str) -> serde_json::Value {
    let mut args = vec!["ecr", "describe-images", "--repository-name", repo];
    args.extend(extra);
    let out = json(&aws.run(&args));
    out["imageDetails"]
        .as_array()
        .expect("imageDetails")
        .iter()
        .find(|d| {
            d["imageTags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == tag))
        })
        .unwrap_or_else(|| panic!("tag {tag} not in describe-images of {repo}:\n{out:#}"))
        .clone()
}

// ---------------------------------------------------------------------------
// 1. The issue's workflow
// ---------------------------------------------------------------------------

#[test]
fn issue_workflow_immutable_repository_push_pull() {
    let s = Server::start_ecr();
    let work = Work::new();
    let aws = root_aws(&s);
    let addr = s.addr.clone();

    // aws ecr create-repository --repository-name todo-service --image-tag-mutability IMMUTABLE
    let created = json(&aws.run(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "todo-service",
        "--image-tag-mutability",
        "IMMUTABLE",
    ]));
    let repo = &created["repository"];
    assert_eq!(repo["repositoryName"], "todo-service", "{created:#}");
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE", "{created:#}");
    assert_eq!(repo["registryId"], ACCOUNT, "{created:#}");
    assert_eq!(
        repo["repositoryUri"],
        format!("{addr}/todo-service"),
        "{created:#}"
    );

    // aws ecr get-login-password | docker login --username AWS --password-stdin ADDR
    let ci = work.docker("ci");
    let mut cleanup = DockerCleanup::new(&ci);
    docker_login(&ci, &addr, &login_password(&aws));

    // docker build -t ADDR/todo-service:<sha> . ; docker push
    let tag = nonce(7);
    let image = format!("{addr}/todo-service:{tag}");
    let built_id = docker_build(&ci, &work.path("ctx-1"), &image, &mut cleanup);
    let pushed = docker_push_digest(&ci.run(&["push", &image]));

    // describe-images: the tag, docker's digest, the layers' size.
    let detail = describe_tag(&aws, &[], "todo-service", &tag);
    assert_eq!(detail["imageDigest"], pushed.as_str(), "{detail:#}");
    assert_eq!(detail["registryId"], ACCOUNT, "{detail:#}");
    assert_eq!(detail["repositoryName"], "todo-service", "{detail:#}");
    let token = login_password(&aws);
    let manifest = served_manifest(&addr, &token, "todo-service", &tag);
    assert_eq!(
        sha256(&manifest),
        pushed,
        "served manifest is not what docker pushed"
    );
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "{m:#}");
    let layer_bytes: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    assert_eq!(
        detail["imageSizeInBytes"].as_u64(),
        Some(layer_bytes),
        "imageSizeInBytes is not the sum of the layer sizes:\n{detail:#}\n{m:#}"
    );
    assert_eq!(m["config"]["digest"], built_id.as_str());

    // Another environment: its own docker config, a fresh token, a pull.
    let deploy = work.docker("deploy");
    let fresh = login_password(&aws);
    docker_login(&deploy, &addr, &fresh);
    ci.run(&["rmi", &image]);
    assert_image_absent(&deploy, &image);
    let unauthenticated = work.docker("nobody").output(&["pull", &image]);
    assert!(
        !unauthenticated.status.success(),
        "a pull without docker login succeeded"
    );
    deploy.run(&["pull", &image]);
    assert_eq!(
        repo_digest(&deploy, &image),
        format!("{addr}/todo-service@{pushed}")
    );
    assert_eq!(
        deploy
            .run(&["image", "inspect", "--format", "{{.Id}}", &image])
            .trim(),
        built_id
    );

    // Another image under the same tag: refused, the tag still names the first one.
    let other_id = docker_build(&deploy, &work.path("ctx-2"), &image, &mut cleanup);
    assert_ne!(other_id, built_id);
    let refused = deploy.fail(&["push", &image]).to_lowercase();
    assert!(
        refused.contains("tag invalid"),
        "docker should say `tag invalid`:\n{refused}"
    );
    assert!(
        refused.contains("cannot be overwritten because the repository is immutable"),
        "docker should print ECR's immutability message:\n{refused}"
    );
    assert!(
        refused.contains(&format!(
            "the image tag '{tag}' already exists in the 'todo-service' repository"
        )),
        "{refused}"
    );
    let detail = describe_tag(&aws, &[], "todo-service", &tag);
    assert_eq!(
        detail["imageDigest"],
        pushed.as_str(),
        "the immutable tag moved"
    );

    // A repository that was never created: no create-on-push in ECR mode.
    let missing_repo = format!("never-created-{}", nonce(6));
    let missing = format!("{addr}/{missing_repo}:{tag}");
    deploy.run(&["tag", &image, &missing]);
    cleanup.add(&missing);
    let started = std::time::Instant::now();
    let refused = deploy.fail(&["push", &missing]);
    assert!(
        refused.contains(&format!(
            "The repository with name '{missing_repo}' does not exist in the registry with id '123456789012'"
        )),
        "docker should report ECR's message for an unknown repository:\n{refused}"
    );
    // A complete error body makes docker give up at once instead of retrying for ~50 s.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "docker retried the push for {:?}",
        started.elapsed()
    );
    aws_fails_with(
        &aws,
        &["ecr", "describe-images", "--repository-name", &missing_repo],
        "RepositoryNotFoundException",
    );
    drop(cleanup);
}

// ---------------------------------------------------------------------------
// 2. Two users with identity policies
// ---------------------------------------------------------------------------

#[test]
fn ci_pushes_and_reader_only_pulls_what_its_policy_allows() {
    let s = Server::start_ecr();
    let work = Work::new();
    let addr = s.addr.clone();
    let root = root_aws(&s);
    let arn = |name: &str| format!("arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}");

    let ci_key = create_user(
        &s,
        "ci",
        &serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "ecr:*", "Resource": arn("app-*")},
                {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}
            ]
        }),
    );
    let reader_key = create_user(
        &s,
        "reader",
        &serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability"
                ], "Resource": arn("app-api")},
                {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}
            ]
        }),
    );
    for name in ["app-api", "app-web"] {
        root.run(&["ecr", "create-repository", "--repository-name", name]);
    }

    // ci logs in and pushes to both repositories.
    let ci_aws = aws(&s, &ci_key.0, &ci_key.1);
    let ci = work.docker("ci");
    let mut cleanup = DockerCleanup::new(&ci);
    docker_login(&ci, &addr, &login_password(&ci_aws));
    let tag = nonce(7);
    let api = format!("{addr}/app-api:{tag}");
    let web = format!("{addr}/app-web:{tag}");
    let built_id = docker_build(&ci, &work.path("ctx-ci"), &api, &mut cleanup);
    ci.run(&["tag", &api, &web]);
    cleanup.add(&web);
    let api_digest = docker_push_digest(&ci.run(&["push", &api]));
    let web_digest = docker_push_digest(&ci.run(&["push", &web]));
    assert_eq!(api_digest, web_digest);
    // ci's ecr:* covers the ECR API on app-* too, and nothing else.
    let d = describe_tag(&ci_aws, &[], "app-api", &tag);
    assert_eq!(d["imageDigest"], api_digest.as_str());
    aws_fails_with(
        &ci_aws,
        &["ecr", "create-repository", "--repository-name", "other"],
        "AccessDeniedException",
    );

    // reader logs in and pulls app-api (docker, then skopeo).
    let reader_aws = aws(&s, &reader_key.0, &reader_key.1);
    let reader_token = login_password(&reader_aws);
    let reader = work.docker("reader");
    docker_login(&reader, &addr, &reader_token);
    ci.run(&["rmi", &api, &web]);
    assert_image_absent(&reader, &api);
    reader.run(&["pull", &api]);
    assert_eq!(
        repo_digest(&reader, &api),
        format!("{addr}/app-api@{api_digest}")
    );
    assert_eq!(
        reader
            .run(&["image", "inspect", "--format", "{{.Id}}", &api])
            .trim(),
        built_id
    );
    let sk = work.skopeo();
    let creds = format!("AWS:{reader_token}");
    let layout = work.path("reader-layout");
    let digestfile = work.path("reader-digest");
    sk.run(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        "--digestfile",
        &digestfile.display().to_string(),
        &format!("docker://{api}"),
        &format!("oci:{}:{tag}", layout.display()),
    ]);
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert!(layout.join("blobs/sha256").is_dir());
    // skopeo converts v2s2 to OCI for an oci: destination; what it read is the pushed digest.
    let raw = sk.run(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{api}"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), api_digest);

    // ... but not app-web.
    let refused = sk
        .fail(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &format!("docker://{web}"),
            &format!("oci:{}:web", work.path("web-layout").display()),
        ])
        .to_lowercase();
    assert!(
        refused.contains("denied") || refused.contains("403"),
        "skopeo should be refused app-web:\n{refused}"
    );
    let refused = reader.fail(&["pull", &web]).to_lowercase();
    assert!(
        refused.contains("denied") || refused.contains("403"),
        "docker should be refused app-web:\n{refused}"
    );

    // ... and may not push to app-api (new layers, and the known ones).
    let own = format!("{addr}/app-api:reader-{}", nonce(6));
    docker_build(&reader, &work.path("ctx-reader"), &own, &mut cleanup);
    let refused = reader.fail(&["push", &own]).to_lowercase();
    assert!(
        refused.contains("denied") || refused.contains("403"),
        "docker push by reader should be denied:\n{refused}"
    );
    let retag = format!("{addr}/app-api:reader-retag-{}", nonce(6));
    reader.run(&["tag", &api, &retag]);
    cleanup.add(&retag);
    let refused = reader.fail(&["push", &retag]).to_lowercase();
    assert!(
        refused.contains("denied") || refused.contains("403"),
        "docker push of a known image by reader should be denied:\n{refused}"
    );
    let listed = json(&root.run(&["ecr", "list-images", "--repository-name", "app-api"]));
    let tags: Vec<&str> = listed["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["imageTag"].as_str())
        .collect();
    assert_eq!(
        tags,
        [tag.as_str()],
        "reader's push left a trace: {listed:#}"
    );

    // The ECR API holds reader to the same policy.
    aws_fails_with(
        &reader_aws,
        &["ecr", "create-repository", "--repository-name", "app-new"],
        "AccessDeniedException",
    );
    aws_fails_with(
        &reader_aws,
        &["ecr", "describe-images", "--repository-name", "app-api"],
        "AccessDeniedException",
    );
    drop(cleanup);
}

// ---------------------------------------------------------------------------
// 3. A second account, granted by a repository policy
// ---------------------------------------------------------------------------

#[test]
fn second_account_pulls_after_repository_policy() {
    let s = Server::start_ecr();
    let work = Work::new();
    let addr = s.addr.clone();
    let root = root_aws(&s);

    let created = json(&berth_iam(&s).run(&["create-account", "--account-id", SECOND_ACCOUNT]));
    assert_eq!(created["AccountId"], SECOND_ACCOUNT, "{created:#}");
    let other = aws(
        &s,
        created["AccessKeyId"].as_str().expect("AccessKeyId"),
        created["SecretAccessKey"]
            .as_str()
            .expect("SecretAccessKey"),
    );

    // The first account pushes app-api.
    root.run(&["ecr", "create-repository", "--repository-name", "app-api"]);
    let owner = work.docker("owner");
    let mut cleanup = DockerCleanup::new(&owner);
    docker_login(&owner, &addr, &login_password(&root));
    let tag = nonce(7);
    let image = format!("{addr}/app-api:{tag}");
    let built_id = docker_build(&owner, &work.path("ctx"), &image, &mut cleanup);
    let pushed = docker_push_digest(&owner.run(&["push", &image]));
    owner.run(&["rmi", &image]);

    // The second account's root logs in to the bare host, which is account
    // 123456789012's registry; without a grant it may read nothing there.
    let token = login_password(&other);
    let consumer = work.docker("consumer");
    docker_login(&consumer, &addr, &token);
    let refused = consumer.fail(&["pull", &image]).to_lowercase();
    assert!(
        refused.contains("denied") || refused.contains("403"),
        "the other account should be denied before any policy:\n{refused}"
    );
    let describe = [
        "ecr",
        "describe-images",
        "--registry-id",
        ACCOUNT,
        "--repository-name",
        "app-api",
    ];
    aws_fails_with(&other, &describe, "AccessDeniedException");

    // The first account grants pulls to the second one.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{SECOND_ACCOUNT}:root"}},"Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer","ecr:BatchCheckLayerAvailability"]}}]}}"#
    );
    root.run(&[
        "ecr",
        "set-repository-policy",
        "--repository-name",
        "app-api",
        "--policy-text",
        &policy,
    ]);
    let stored = json(&root.run(&[
        "ecr",
        "get-repository-policy",
        "--repository-name",
        "app-api",
    ]));
    assert_eq!(
        json(stored["policyText"].as_str().unwrap()),
        json(&policy),
        "{stored:#}"
    );
    retry(
        Duration::from_secs(10),
        "pull after set-repository-policy",
        || {
            consumer
                .output(&["pull", &image])
                .status
                .success()
                .then_some(())
        },
    );
    assert_eq!(
        repo_digest(&consumer, &image),
        format!("{addr}/app-api@{pushed}")
    );
    assert_eq!(
        consumer
            .run(&["image", "inspect", "--format", "{{.Id}}", &image])
            .trim(),
        built_id
    );
    // Pulls only: DescribeImages and pushes stay refused.
    aws_fails_with(&other, &describe, "AccessDeniedException");
    let push_to = format!("{addr}/app-api:other-{}", nonce(6));
    consumer.run(&["tag", &image, &push_to]);
    cleanup.add(&push_to);
    let refused = consumer.fail(&["push", &push_to]).to_lowercase();
    assert!(
        refused.contains("denied") || refused.contains("403"),
        "the other account may not push:\n{refused}"
    );

    // Granting DescribeImages too makes describe-images work across accounts.
    let policy = policy.replace(
        r#""ecr:BatchCheckLayerAvailability""#,
        r#""ecr:BatchCheckLayerAvailability","ecr:DescribeImages""#,
    );
    root.run(&[
        "ecr",
        "set-repository-policy",
        "--repository-name",
        "app-api",
        "--policy-text",
        &policy,
    ]);
    let image_id = format!("imageTag={tag}");
    let detail = retry(
        Duration::from_secs(10),
        "describe-images after the grant",
        || {
            let mut args = describe.to_vec();
            args.extend(["--image-ids", &image_id]);
            let out = other.output(&args);
            out.status
                .success()
                .then(|| json(&String::from_utf8_lossy(&out.stdout)))
        },
    );
    assert_eq!(
        detail["imageDetails"][0]["imageDigest"],
        pushed.as_str(),
        "{detail:#}"
    );
    assert_eq!(
        detail["imageDetails"][0]["registryId"], ACCOUNT,
        "{detail:#}"
    );
    drop(cleanup);
}

// ---------------------------------------------------------------------------
// 4. Tokens: wrong, expired, of a deactivated key
// ---------------------------------------------------------------------------

#[test]
fn wrong_or_missing_credentials_get_a_basic_challenge() {
    let s = Server::start_ecr();
    let work = Work::new();
    let addr = s.addr.clone();

    let docker = work.docker("garbage");
    let refused = docker
        .fail_with_input(
            &["login", "--username", "AWS", "--password-stdin", &addr],
            Some(b"garbage"),
        )
        .to_lowercase();
    assert!(
        refused.contains("unauthorized"),
        "docker login with a garbage password should say unauthorized:\n{refused}"
    );
    let config = std::fs::read_to_string(work.path("docker-config-garbage/config.json")).unwrap();
    assert!(
        !config.contains(&addr),
        "a failed login was saved: {config}"
    );

    assert_basic_challenge(
        &v2_base(&addr, Some("garbage")),
        "GET /v2/ with AWS:garbage",
    );
    assert_basic_challenge(&v2_base(&addr, None), "GET /v2/ without Authorization");
    // A well-formed token signed by someone else is no better.
    let token = login_password(&root_aws(&s));
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.AAAA");
    assert_basic_challenge(
        &v2_base(&addr, Some(&forged)),
        "GET /v2/ with a forged token",
    );
    let r = v2_base(&addr, Some(&token));
    assert_eq!(r.status, 200, "GET /v2/ with a real token:\n{}", r.dump());
}

/// A `berth serve` running under `faketime`, in its own process group so that
/// both faketime and the berth it forks are stopped together.
struct FakeTimeServer {
    child: Child,
}

impl FakeTimeServer {
    fn start(data_dir: &Path, addr: &str, offset: &str) -> FakeTimeServer {
        require("faketime");
        use std::os::unix::process::CommandExt;
        let child = Command::new("faketime")
            .args([
                "-f",
                offset,
                env!("CARGO_BIN_EXE_berth"),
                "serve",
                "--listen",
                addr,
                "--data-dir",
            ])
            .arg(data_dir)
            // The environment of Server::start_ecr().
            .env("BERTH_ACCOUNT_ID", ACCOUNT)
            .env("BERTH_ROOT_ACCESS_KEY_ID", ROOT_KEY_ID)
            .env("BERTH_ROOT_SECRET_ACCESS_KEY", ROOT_SECRET)
            .env("BERTH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start faketime berth serve");
        let mut s = FakeTimeServer { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("faketime berth serve exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "faketime berth did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

impl Drop for FakeTimeServer {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn token_expires_after_twelve_hours() {
    let mut s = Server::start_ecr();
    let work = Work::new();
    let addr = s.addr.clone();
    let old = login_password(&root_aws(&s));
    let r = v2_base(&addr, Some(&old));
    assert_eq!(r.status, 200, "fresh token:\n{}", r.dump());

    // Thirteen hours later, on the same data (same token-signing key).
    assert!(s.terminate().success(), "berth did not exit cleanly");
    let _later = FakeTimeServer::start(&s.data_dir, &addr, "+13h");
    let r = v2_base(&addr, Some(&old));
    assert_basic_challenge(&r, "GET /v2/ with a 13-hour-old token");
    assert!(
        String::from_utf8_lossy(&r.body).contains("expired"),
        "the 401 should say the token expired:\n{}",
        r.dump()
    );
    let docker = work.docker("late");
    let refused = docker
        .fail_with_input(
            &["login", "--username", "AWS", "--password-stdin", &addr],
            Some(old.as_bytes()),
        )
        .to_lowercase();
    assert!(refused.contains("unauthorized"), "{refused}");

    // A token from the time-shifted server works. The AWS CLI runs under the
    // same faketime offset, so its SigV4 timestamp matches the server's clock.
    let shifted_aws = aws_tool(
        Tool::new("faketime").args(&["-f", "+13h", "aws"]),
        &format!("http://{addr}"),
        ROOT_KEY_ID,
        ROOT_SECRET,
    );
    let new = login_password(&shifted_aws);
    assert_ne!(new, old);
    let r = v2_base(&addr, Some(&new));
    assert_eq!(r.status, 200, "token of the shifted server:\n{}", r.dump());
    docker_login(&docker, &addr, &new);
    // The CLI with the real clock is 13 h off: SigV4 refuses it.
    let unshifted = root_aws(&s).fail(&["ecr", "get-login-password"]);
    assert!(
        unshifted.contains("InvalidSignatureException")
            || unshifted.contains("Signature expired")
            || unshifted.contains("SignatureDoesNotMatch"),
        "a 13-hour clock skew should be refused:\n{unshifted}"
    );
}

#[test]
fn token_of_deactivated_key_stops_working() {
    let s = Server::start_ecr();
    let addr = s.addr.clone();
    let iam = berth_iam(&s);
    let key = json(&iam.run(&["create-access-key", "--account-id", ACCOUNT]));
    let (id, secret) = (
        key["AccessKey"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_string(),
        key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let second = aws(&s, &id, &secret);
    let token = login_password(&second);
    let root_token = login_password(&root_aws(&s));
    let r = v2_base(&addr, Some(&token));
    assert_eq!(r.status, 200, "{}", r.dump());

    let out = json(&iam.run(&["deactivate-access-key", "--access-key-id", &id]));
    assert_eq!(out["Status"], "Inactive");
    let start = Instant::now();
    retry(
        Duration::from_secs(8),
        "token of a deactivated key refused",
        || (v2_base(&addr, Some(&token)).status == 401).then_some(()),
    );
    let took = start.elapsed();
    assert!(
        took <= Duration::from_secs(7),
        "the token kept working for {took:?} after deactivation"
    );
    assert_basic_challenge(&v2_base(&addr, Some(&token)), "token of a deactivated key");
    // The key itself is refused by the ECR API; other keys are unaffected.
    let t = second.fail(&["ecr", "get-login-password"]);
    assert!(
        t.contains("UnrecognizedClientException")
            || t.contains("not active")
            || t.contains("InvalidClientTokenId"),
        "{t}"
    );
    let r = v2_base(&addr, Some(&root_token));
    assert_eq!(r.status, 200, "root's token: {}", r.dump());
}

// ---------------------------------------------------------------------------
// HTTPS
// ---------------------------------------------------------------------------

/// The manifest `reference` of `name` over HTTPS with the test CA, exactly as served.
fn https_manifest(ca: &Path, host: &str, token: &str, name: &str, reference: &str) -> Vec<u8> {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"));
    Tool::new("curl")
        .run(&[
            "-sS",
            "--fail",
            "--cacert",
            &ca.display().to_string(),
            "-H",
            &format!("Authorization: Basic {auth}"),
            "-H",
            &format!("Accept: {V2S2}"),
            &format!("https://{host}/v2/{name}/manifests/{reference}"),
        ])
        .into_bytes()
}

/// Push `tag` (an image built as `id`), check DescribeImages lists it, remove
/// it from the engine and pull it back by digest: the digest.
fn push_then_pull_by_digest(
    docker: &Tool,
    aws: &Tool,
    tag: &str,
    id: &str,
    cleanup: &mut DockerCleanup,
) -> String {
    let digest = docker_push_digest(&docker.run(&["push", tag]));
    let (repo, _) = tag.rsplit_once(':').unwrap();
    let (host, name) = repo.split_once('/').unwrap();
    let described = json(&aws.run(&["ecr", "describe-images", "--repository-name", name]));
    assert_eq!(described["imageDetails"][0]["imageDigest"], digest);
    docker.run(&["rmi", tag]);
    // (Gone with its only tag, unless the engine had it under another.)
    let _ = docker.output(&["rmi", id]);
    assert_image_absent(docker, id);
    let by_digest = format!("{host}/{name}@{digest}");
    cleanup.add(&by_digest);
    docker.run(&["pull", &by_digest]);
    let pulled = docker.run(&["image", "inspect", "--format", "{{.Id}}", &by_digest]);
    assert_eq!(pulled.trim(), id);
    assert_eq!(repo_digest(docker, &by_digest), by_digest);
    digest
}

/// The issue's workflow over HTTPS on a non-loopback address: the aws CLI
/// trusts the test CA through `AWS_CA_BUNDLE`, the Docker engine through
/// `/etc/docker/certs.d/HOST:PORT/ca.crt`; `get-login-password | docker
/// login`, push, pull by digest, the bytes compared.
#[test]
fn https_login_push_pull_with_a_test_ca() {
    use common::tls::{DockerTrust, Pki};
    let pki = Pki::new();
    let work = Work::new();
    let s = common::tls::start_https(&pki, &work.path("data"), &[], true);
    let addr = s.addr.clone();
    let _trust = DockerTrust::install(&addr, &pki.ca());
    let endpoint = format!("https://{addr}");
    let aws = aws_tool(Tool::new("aws"), &endpoint, ROOT_KEY_ID, ROOT_SECRET);
    // Without the CA the CLI refuses the certificate (once: no retries).
    let t = aws
        .clone()
        .env("AWS_MAX_ATTEMPTS", "1")
        .fail(&["ecr", "describe-repositories"]);
    assert!(t.contains("CERTIFICATE_VERIFY_FAILED"), "{t}");
    let aws = aws.env("AWS_CA_BUNDLE", pki.ca().display().to_string());

    let name = "tls/todo-service";
    let repo = json(&aws.run(&["ecr", "create-repository", "--repository-name", name]));
    assert_eq!(
        repo["repository"]["repositoryUri"],
        format!("{addr}/{name}")
    );
    let auth = json(&aws.run(&["ecr", "get-authorization-token"]));
    assert_eq!(
        auth["authorizationData"][0]["proxyEndpoint"],
        format!("https://{addr}")
    );
    let password = login_password(&aws);
    let docker = work.docker("ci");
    docker_login(&docker, &addr, &password);

    let mut cleanup = DockerCleanup::new(&docker);
    let tag = format!("{addr}/{name}:{}", nonce(8));
    let id = docker_build(&docker, &work.path("ctx"), &tag, &mut cleanup);
    let digest = push_then_pull_by_digest(&docker, &aws, &tag, &id, &mut cleanup);
    // The bytes served over HTTPS are the manifest docker pushed.
    let served = https_manifest(&pki.ca(), &addr, &password, name, &digest);
    assert_eq!(sha256(&served), digest);
    // GetDownloadUrlForLayer hands out an https:// URL that serves the layer.
    let manifest = json(&String::from_utf8(served).unwrap());
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let url = json(&aws.run(&[
        "ecr",
        "get-download-url-for-layer",
        "--repository-name",
        name,
        "--layer-digest",
        layer,
    ]))["downloadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with(&format!("https://{addr}/v2/")), "{url}");
    let blob = work.path("layer");
    Tool::new("curl").run(&[
        "-sS",
        "--fail",
        "--cacert",
        &pki.ca().display().to_string(),
        "-o",
        &blob.display().to_string(),
        &url,
    ]);
    assert_eq!(sha256(&std::fs::read(&blob).unwrap()), layer);
}

/// Amazon's credential helper (`docker-credential-ecr-login`, Debian's
/// amazon-ecr-credential-helper) as docs/tls.md sets it up: it accepts only
/// registries named `ACCOUNT.dkr.ecr.REGION.amazonaws.com` and asks
/// `https://api.ecr.REGION.amazonaws.com` (port 443) for the token, so
/// `/etc/hosts` points those names at Berth listening on 443 with a
/// certificate for `*.dkr.ecr.REGION.amazonaws.com` and
/// `api.ecr.REGION.amazonaws.com`; the helper trusts the CA through
/// `AWS_CA_BUNDLE`, the Docker engine through `certs.d`. No `docker login`:
/// docker asks the helper (`credHelpers`) for every push and pull, for the
/// primary account and for a second one.
#[test]
fn amazon_ecr_credential_helper_over_https() {
    use common::tls::{DockerTrust, HostsEntries, Pki, host_ip};
    require("docker-credential-ecr-login");
    let ip = host_ip();
    let pki = Pki::new();
    let cert = pki.server("ecr", &ip, 1);
    let work = Work::new();
    let registry = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com");
    let second = format!("{SECOND_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com");
    let api = format!("api.ecr.{REGION}.amazonaws.com");
    let _hosts = HostsEntries::add(&ip, &[&registry, &second, &api]);
    let _trust = DockerTrust::install(&registry, &pki.ca());
    let _trust2 = DockerTrust::install(&second, &pki.ca());
    let args = cert.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_at(&format!("{ip}:443"), &work.path("data"), &args, true);
    let aws = aws_tool(
        Tool::new("aws"),
        &format!("https://{api}"),
        ROOT_KEY_ID,
        ROOT_SECRET,
    )
    .env("AWS_CA_BUNDLE", pki.ca().display().to_string());

    // ECR's names in every answer: the primary account's too.
    let name = "helper/app";
    let repo = json(&aws.run(&["ecr", "create-repository", "--repository-name", name]));
    assert_eq!(
        repo["repository"]["repositoryUri"],
        format!("{registry}/{name}")
    );
    let auth = json(&aws.run(&["ecr", "get-authorization-token"]));
    assert_eq!(
        auth["authorizationData"][0]["proxyEndpoint"],
        format!("https://{registry}")
    );

    // docker with nothing but `credHelpers`, the helper with the key in its
    // environment (as from an instance role or ~/.aws) and its own cache.
    let config = work.path("docker-config-helper");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        serde_json::json!({ "credHelpers": { &registry: "ecr-login", &second: "ecr-login" } })
            .to_string(),
    )
    .unwrap();
    let docker = Tool::new("docker")
        .env("DOCKER_CONFIG", config.display().to_string())
        .env("AWS_ACCESS_KEY_ID", ROOT_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", ROOT_SECRET)
        .env("AWS_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CA_BUNDLE", pki.ca().display().to_string())
        .env(
            "AWS_ECR_CACHE_DIR",
            work.path("ecr-cache").display().to_string(),
        );
    let mut cleanup = DockerCleanup::new(&docker);
    let tag = format!("{registry}/{name}:{}", nonce(8));
    let id = docker_build(&docker, &work.path("ctx"), &tag, &mut cleanup);
    let digest = push_then_pull_by_digest(&docker, &aws, &tag, &id, &mut cleanup);
    let by_digest = format!("{registry}/{name}@{digest}");
    // The helper asked Berth, and what it cached is Berth's answer.
    let cache = std::fs::read_to_string(work.path("ecr-cache/cache.json")).unwrap();
    assert!(cache.contains(&format!("https://{registry}")), "{cache}");

    // A second account's registry, through the same helper: its own host
    // name selects it, the proxyEndpoint the helper checks names it.
    let created = json(&berth_iam(&s).run(&["create-account", "--account-id", SECOND_ACCOUNT]));
    let (key_id, secret) = (
        created["AccessKeyId"].as_str().unwrap().to_string(),
        created["SecretAccessKey"].as_str().unwrap().to_string(),
    );
    // Its /v2/ challenge names the registry asked for, as ECR's does.
    let challenge = Tool::new("curl").run(&[
        "-sS",
        "--cacert",
        &pki.ca().display().to_string(),
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("https://{second}/v2/"),
    ]);
    assert!(
        challenge.to_lowercase().contains(&format!(
            "www-authenticate: basic realm=\"https://{second}/\""
        )),
        "{challenge}"
    );
    let aws2 = aws_tool(
        Tool::new("aws"),
        &format!("https://{api}"),
        &key_id,
        &secret,
    )
    .env("AWS_CA_BUNDLE", pki.ca().display().to_string());
    let repo2 = json(&aws2.run(&["ecr", "create-repository", "--repository-name", name]));
    assert_eq!(
        repo2["repository"]["repositoryUri"],
        format!("{second}/{name}")
    );
    let docker2 = docker
        .clone()
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret);
    let tag2 = format!("{second}/{name}:{}", nonce(8));
    cleanup.add(&tag2);
    docker2.run(&["tag", &by_digest, &tag2]);
    assert_eq!(docker_push_digest(&docker2.run(&["push", &tag2])), digest);
}

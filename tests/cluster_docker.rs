//! Berth nodes as Docker containers on a user-defined network, one
//! deployment: one PostgreSQL database, one S3 prefix and one master key
//! (the servers of `tests/services/start.sh`, which listen on the host's
//! loopback, reached through proxies on the network's gateway address). The
//! image is built here, `FROM scratch`, of the test's own `berth` binary and
//! the libraries `ldd` lists for it: nothing is pulled. What one node
//! acknowledges another serves byte for byte; a paused node and a node cut
//! off the network stop nothing on the others, and each serves what was
//! pushed meanwhile once it is back. Skipped, with the reason, only when
//! there is no Docker engine (CI has one).

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Deployment;
use common::image::{pull_image_at, push_image_at};

/// The port the nodes listen on in their containers.
const PORT: u16 = 5000;
/// The repository every image of the test is pushed to.
const REPO: &str = "docker/app";

/// `docker ARGS`: its standard output, trimmed, or what it said.
fn docker(args: &[&str]) -> Result<String, String> {
    docker_with(Command::new("docker").args(args))
}

fn docker_with(c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("running docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{:?}: {}",
            c.get_args().collect::<Vec<_>>(),
            common::tail(&out.stderr, 2000).trim()
        ))
    }
}

/// The Docker objects of one run: an image, a network and `nodes`
/// containers, named after the test process so that parallel runs do not
/// meet. Removed on drop, the test passed or not (a failed test prints the
/// nodes' logs first).
struct Cluster {
    name: String,
    nodes: usize,
}

impl Cluster {
    fn new(nodes: usize) -> Cluster {
        let c = Cluster {
            name: format!("berth-test-cluster-{}", std::process::id()),
            nodes,
        };
        // What a killed run of a process with the same id left behind.
        c.remove();
        c
    }

    fn image(&self) -> String {
        format!("{}:latest", self.name)
    }

    fn network(&self) -> &str {
        &self.name
    }

    fn container(&self, i: usize) -> String {
        format!("{}-node{i}", self.name)
    }

    fn remove(&self) {
        let mut rm = Command::new("docker");
        rm.args(["rm", "-f"])
            .args((0..self.nodes).map(|i| self.container(i)));
        let _ = docker_with(&mut rm);
        let _ = docker(&["network", "rm", self.network()]);
        let _ = docker(&["rmi", "-f", &self.image()]);
    }

    /// Create the network, on the IPv4 subnet Docker picks for it but as
    /// one of the network's own, so that a node can be connected again at
    /// the address it had (`--ip`), as after a partition; the host's
    /// address on it.
    fn create_network(&self) -> IpAddr {
        let net = self.network();
        for attempt in 1.. {
            docker(&["network", "create", net]).unwrap();
            let format = "{{range .IPAM.Config}}{{.Subnet}},{{.Gateway}} {{end}}";
            let config = docker(&["network", "inspect", "-f", format, net]).unwrap();
            docker(&["network", "rm", net]).unwrap();
            let (subnet, gateway) = config
                .split_whitespace()
                .filter_map(|c| c.split_once(','))
                .find(|(_, g)| g.parse::<std::net::Ipv4Addr>().is_ok())
                .unwrap_or_else(|| panic!("no IPv4 subnet on the network: {config:?}"));
            match docker(&[
                "network",
                "create",
                "--subnet",
                subnet,
                "--gateway",
                gateway,
                net,
            ]) {
                Ok(_) => return gateway.parse().unwrap(),
                // Another network took the subnet in between.
                Err(e) if attempt < 5 => eprintln!("again: {e}"),
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    /// Node `i`'s address on the network.
    fn ip(&self, i: usize) -> IpAddr {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network()
        );
        let ip = docker(&["inspect", "-f", &format, &self.container(i)]).unwrap();
        ip.parse().unwrap_or_else(|_| panic!("node {i}: {ip:?}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes {
                let c = self.container(i);
                let out = Command::new("docker")
                    .args(["logs", "--tail", "40", &c])
                    .output();
                if let Ok(out) = out {
                    eprintln!(
                        "--- {c}:\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        self.remove();
    }
}

/// Build `tag`: `FROM scratch`, the test's `berth` binary as `/berth` and
/// the shared libraries and the loader `ldd` lists for it, at their paths.
fn build_image(tag: &str) {
    let bin = Path::new(env!("CARGO_BIN_EXE_berth"));
    let ldd = Command::new("ldd").arg(bin).output().expect("run ldd");
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path().join("root");
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
    // `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1` has no file.
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("{lib}: {e}"));
    }
    // Without its debug information (a tenth of the size: the build takes
    // a second, not several); as it is where there is no `strip`.
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(root.join("berth"))
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(bin, root.join("berth")).unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nENTRYPOINT [\"/berth\"]\n",
    )
    .unwrap();
    docker(&["build", "-q", "-t", tag, &ctx.path().display().to_string()]).unwrap();
}

/// Start node `i` of `deployment` (an open registry, `--auth none`).
fn start_node(cluster: &Cluster, i: usize, deployment: &Deployment) {
    let mut c = Command::new("docker");
    let name = cluster.container(i);
    c.args(["run", "-d", "--name", &name, "--network", cluster.network()]);
    c.args(["-e", "BERTH_LOG=warn"]);
    // The values (the keys among them) go through docker's environment,
    // not its command line.
    for (k, v) in &deployment.env {
        c.arg("-e").arg(k).env(k, v);
    }
    c.arg(cluster.image())
        .args(["serve", "--listen", &format!("0.0.0.0:{PORT}")])
        .args(["--data-dir", "/data", "--auth", "none"])
        .args(&deployment.args);
    docker_with(&mut c).unwrap();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// One `GET /v2/` on a connection of its own, given `limit` to connect and
/// as long again to answer.
async fn probe(base: &str, limit: Duration) -> Result<reqwest::StatusCode, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(limit)
        .timeout(2 * limit)
        .build()
        .unwrap()
        .get(format!("{base}/v2/"))
        .send()
        .await
        .map(|r| r.status())
}

/// Call `f` until it succeeds, for up to `limit`; its value and how long it took.
async fn within<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return (v, start.elapsed()),
            Err(e) if start.elapsed() > limit => panic!("{what}: not within {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// An image to push: a config naming `tag`, a 1 MiB and a 100 kB layer of
/// random bytes.
fn image(tag: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let config = format!("{{\"tag\":\"{tag}\"}}").into_bytes();
    let layers = [1 << 20, 100_000]
        .into_iter()
        .map(|len| {
            let mut b = vec![0; len];
            berth::secrets::random_bytes(&mut b);
            b
        })
        .collect();
    (config, layers)
}

/// Push `tag` through `from` and pull it back through `to`: the same manifest
/// and the same blobs, byte for byte.
async fn push_and_pull(c: &reqwest::Client, from: &str, to: &str, tag: &str) {
    let (config, layers) = image(tag);
    let digest = push_image_at(c, from, REPO, tag, &config, &layers)
        .await
        .unwrap();
    let (m, blobs) = pull_image_at(c, to, REPO, tag).await.unwrap();
    assert_eq!(common::sha256(&m), digest, "{tag} via {to}");
    assert!(blobs[0] == config && blobs[1..] == layers, "{tag} via {to}");
}

#[tokio::test]
async fn nodes_in_containers_ride_out_a_paused_and_a_disconnected_node() {
    if let Err(why) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        eprintln!("skipped: no Docker engine: {why}");
        return;
    }
    let started = Instant::now();
    let cluster = Cluster::new(3);
    build_image(&cluster.image());
    let built = started.elapsed();
    let gateway = cluster.create_network();
    // The containers reach the host's PostgreSQL and S3 through proxies on
    // the host's address on their network.
    let (deployment, _pg, _s3) = Deployment::scale_out().proxied(gateway);
    std::thread::scope(|s| {
        for i in 0..3 {
            let (cluster, deployment) = (&cluster, &deployment);
            s.spawn(move || start_node(cluster, i, deployment));
        }
    });
    let ips: Vec<IpAddr> = (0..3).map(|i| cluster.ip(i)).collect();
    let bases: Vec<String> = ips.iter().map(|ip| format!("http://{ip}:{PORT}")).collect();
    for base in &bases {
        within(Duration::from_secs(30), &format!("{base} up"), || async {
            match probe(base, Duration::from_secs(1)).await {
                Ok(st) if st.is_success() => Ok(()),
                r => Err(format!("{r:?}")),
            }
        })
        .await;
    }
    let ready = started.elapsed() - built;
    let c = client();
    push_and_pull(&c, &bases[0], &bases[1], "together").await;

    // Node 2 paused: its kernel still takes connections but nothing answers;
    // the others push and pull as before.
    docker(&["pause", &cluster.container(2)]).unwrap();
    let r = probe(&bases[2], Duration::from_millis(500)).await;
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout() && !e.is_connect()),
        "a paused node: {r:?}"
    );
    push_and_pull(&c, &bases[0], &bases[1], "while-paused").await;
    docker(&["unpause", &cluster.container(2)]).unwrap();
    let (_, paused_back) = within(
        Duration::from_secs(10),
        "the unpaused node serves what was pushed while it was paused",
        || pull_image_at(&c, &bases[2], REPO, "while-paused"),
    )
    .await;

    // Node 1 off the network: no connection reaches it, the others push and
    // pull as before.
    docker(&[
        "network",
        "disconnect",
        cluster.network(),
        &cluster.container(1),
    ])
    .unwrap();
    let r = probe(&bases[1], Duration::from_millis(500)).await;
    assert!(
        r.as_ref().is_err_and(reqwest::Error::is_connect),
        "a disconnected node: {r:?}"
    );
    push_and_pull(&c, &bases[0], &bases[2], "while-apart").await;
    push_and_pull(&c, &bases[2], &bases[0], "while-apart-2").await;
    let ip = ips[1].to_string();
    docker(&[
        "network",
        "connect",
        "--ip",
        &ip,
        cluster.network(),
        &cluster.container(1),
    ])
    .unwrap();
    let (_, apart_back) = within(
        Duration::from_secs(30),
        "the reconnected node serves what was pushed while it was apart",
        || async {
            for tag in ["while-apart", "while-apart-2", "together"] {
                pull_image_at(&c, &bases[1], REPO, tag).await?;
            }
            Ok(())
        },
    )
    .await;
    // What it takes now, the others serve.
    push_and_pull(&c, &bases[1], &bases[2], "after").await;
    eprintln!(
        "image built in {built:?}, 3 nodes ready {ready:?} later; the unpaused node \
         answered after {paused_back:?}, the reconnected one after {apart_back:?}; \
         {:?} in all",
        started.elapsed()
    );
}

//! Berth as Docker containers on a user-defined network: the image is built
//! here, `FROM scratch`, of the test's own `berth` binary and the libraries
//! `ldd` lists for it (nothing is pulled: the engine has no images and
//! cannot pull); the host reaches the containers at their addresses on the
//! network, as its gateway. A [`Cluster`] removes its containers, network
//! and image when dropped, the test passed or not.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The port Berth listens on in its containers.
pub const PORT: u16 = 5000;

/// `docker ARGS`: its standard output, trimmed, or what it said.
pub fn docker(args: &[&str]) -> Result<String, String> {
    docker_with(Command::new("docker").args(args))
}

pub fn docker_with(c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("running docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{:?}: {}",
            c.get_args().collect::<Vec<_>>(),
            super::tail(&out.stderr, 2000).trim()
        ))
    }
}

/// A new [`Cluster`] of `nodes` with its image built and its network
/// created, and the host's address on the network; `None`, having said
/// why, when there is no Docker engine (the test is skipped).
pub fn cluster(kind: &str, nodes: usize) -> Option<(Cluster, IpAddr)> {
    if let Err(why) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        eprintln!("skipped: no Docker engine: {why}");
        return None;
    }
    let cluster = Cluster::new(kind, nodes);
    cluster.build_image();
    let gateway = cluster.create_network();
    Some((cluster, gateway))
}

/// The Docker objects of one run: an image, a network and `nodes`
/// containers, named after the test (`kind`) and its process so that
/// parallel runs do not meet. Removed on drop, the test passed or not (a
/// failed test prints the nodes' logs first).
pub struct Cluster {
    pub name: String,
    pub nodes: usize,
}

impl Cluster {
    pub fn new(kind: &str, nodes: usize) -> Cluster {
        let c = Cluster {
            name: format!("berth-test-{kind}-{}", std::process::id()),
            nodes,
        };
        // What a killed run of a process with the same id left behind.
        c.remove();
        c
    }

    pub fn image(&self) -> String {
        format!("{}:latest", self.name)
    }

    pub fn network(&self) -> &str {
        &self.name
    }

    /// Node `i`'s container name (also its host name on the network).
    pub fn container(&self, i: usize) -> String {
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
    pub fn create_network(&self) -> IpAddr {
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

    /// Start node `i`: `berth serve` on [`PORT`] with `/data` as its data
    /// directory, `args` after those, `env` set in the container (through
    /// docker's environment, not its command line: the keys are among the
    /// values) and `files` (path in the container, content) in place before
    /// it starts.
    pub fn start(
        &self,
        i: usize,
        args: &[String],
        env: &[(String, String)],
        files: &[(&str, &[u8])],
    ) {
        let name = self.container(i);
        let mut c = Command::new("docker");
        c.args(["create", "--name", &name, "--network", self.network()]);
        c.args(["-e", "BERTH_LOG=warn"]);
        for (k, v) in env {
            c.arg("-e").arg(k).env(k, v);
        }
        c.arg(self.image())
            .args(["serve", "--listen", &format!("0.0.0.0:{PORT}")])
            .args(["--data-dir", "/data"])
            .args(args);
        docker_with(&mut c).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (n, (path, content)) in files.iter().enumerate() {
            let local = dir.path().join(n.to_string());
            std::fs::write(&local, content).unwrap();
            let to = format!("{name}:{path}");
            docker(&["cp", &local.display().to_string(), &to]).unwrap();
        }
        docker(&["start", &name]).unwrap();
    }

    /// Node `i`'s address on the network.
    pub fn ip(&self, i: usize) -> IpAddr {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network()
        );
        let ip = docker(&["inspect", "-f", &format, &self.container(i)]).unwrap();
        ip.parse().unwrap_or_else(|_| panic!("node {i}: {ip:?}"))
    }

    /// Node `i`'s base URL, as the host reaches it.
    pub fn base(&self, i: usize) -> String {
        format!("http://{}:{PORT}", self.ip(i))
    }

    /// Take node `i` off the network: no connection reaches it or leaves it.
    pub fn disconnect(&self, i: usize) {
        docker(&["network", "disconnect", self.network(), &self.container(i)]).unwrap();
    }

    /// Put node `i` back on the network at `ip`, the address it had.
    pub fn connect(&self, i: usize, ip: IpAddr) {
        let ip = ip.to_string();
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            self.network(),
            &self.container(i),
        ])
        .unwrap();
    }

    /// Build the image (see [`build_image`]).
    pub fn build_image(&self) {
        build_image(&self.image());
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
pub fn build_image(tag: &str) {
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

/// One `GET /v2/` on a connection of its own, given `limit` to connect and
/// as long again to answer.
pub async fn probe(base: &str, limit: Duration) -> Result<reqwest::StatusCode, reqwest::Error> {
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

/// Wait up to `limit` for `base` to answer `GET /v2/` with any status.
pub async fn wait_answering(base: &str, limit: Duration) {
    within(limit, &format!("{base} up"), || async {
        probe(base, Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

/// Call `f` until it succeeds, for up to `limit`; its value and how long it took.
pub async fn within<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> (T, Duration)
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

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
use std::time::{Duration, Instant};

use common::Deployment;
use common::docker::{Cluster, PORT, docker, probe, wait_answering, within};
use common::image::{pull_image_at, push_image_at};

/// The repository every image of the test is pushed to.
const REPO: &str = "docker/app";

/// Start node `i` of `deployment` (an open registry, `--auth none`).
fn start_node(cluster: &Cluster, i: usize, deployment: &Deployment) {
    let mut args = vec!["--auth".to_string(), "none".to_string()];
    args.extend(deployment.args.iter().cloned());
    cluster.start(i, &args, &deployment.env, &[]);
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
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
    let started = Instant::now();
    let Some((cluster, gateway)) = common::docker::cluster("cluster", 3) else {
        return;
    };
    let built = started.elapsed();
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
        wait_answering(base, Duration::from_secs(30)).await;
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
    cluster.disconnect(1);
    let r = probe(&bases[1], Duration::from_millis(500)).await;
    assert!(
        r.as_ref().is_err_and(reqwest::Error::is_connect),
        "a disconnected node: {r:?}"
    );
    push_and_pull(&c, &bases[0], &bases[2], "while-apart").await;
    push_and_pull(&c, &bases[2], &bases[0], "while-apart-2").await;
    cluster.connect(1, ips[1]);
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
        "image built and network created in {built:?}, 3 nodes ready {ready:?} later; the unpaused node \
         answered after {paused_back:?}, the reconnected one after {apart_back:?}; \
         {:?} in all",
        started.elapsed()
    );
}

//! `NatsCluster`: three real `nats-server` processes with JetStream, routed to each other on
//! loopback, each with its own port, store directory and logs; any node can be killed,
//! stopped and brought back on the same ports and store.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::nats_server::{free_port, jetstream_info, NatsServer};
use crate::scratch::Scratch;

/// How long the cluster may take to elect a JetStream meta leader once every node is up.
pub const CLUSTER_READY_WITHIN: Duration = Duration::from_secs(60);

/// A 3-node JetStream cluster named `newsflow`, nodes `n1`..`n3`.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    own_dir: Option<Scratch>,
}

/// The configuration of node `index` (0-based) whose cluster port is `ports[index]`.
fn node_config(index: usize, route_ports: &[u16]) -> String {
    let routes = route_ports
        .iter()
        .map(|port| format!("nats-route://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "server_name: n{}\ncluster {{\n  name: newsflow\n  listen: 127.0.0.1:{}\n  routes: [{routes}]\n}}\n",
        index + 1,
        route_ports[index]
    )
}

impl NatsCluster {
    /// Starts three routed nodes under a temporary directory of their own and waits until
    /// JetStream answers on every node.
    pub async fn start() -> Self {
        let scratch = Scratch::new("nats-cluster");
        let mut cluster = Self::start_in(scratch.path()).await;
        cluster.own_dir = Some(scratch);
        cluster
    }

    /// Starts three routed nodes whose stores and logs live under `dir/n1`..`dir/n3`.
    pub async fn start_in(dir: &Path) -> Self {
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for index in 0..3 {
            let node_dir = dir.join(format!("n{}", index + 1));
            std::fs::create_dir_all(&node_dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", node_dir.display()));
            nodes.push(NatsServer::with_config(&node_dir, &node_config(index, &route_ports)).await);
        }
        let cluster = Self {
            nodes,
            own_dir: None,
        };
        cluster.wait_jetstream(CLUSTER_READY_WITHIN).await;
        cluster
    }

    /// Every node's client URL, comma-separated: what `--nats-url` is given.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `index` (0-based).
    pub fn node(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has three nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node named `n<k>` (as the server calls itself in stream info).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        let number: usize = server_name.strip_prefix('n')?.parse().ok()?;
        (1..=self.nodes.len()).contains(&number).then(|| number - 1)
    }

    /// Waits until every running node answers a JetStream account request without error,
    /// which needs an elected meta leader.
    pub async fn wait_jetstream(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for node in self.nodes.iter().filter(|node| node.proc().is_some()) {
            loop {
                let last = match jetstream_info(&node.url()).await {
                    Ok(()) => break,
                    Err(why) => why,
                };
                assert!(
                    Instant::now() < deadline,
                    "JetStream on {} not ready within {within:?}: {last}",
                    node.url()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        self.own_dir.take();
    }
}

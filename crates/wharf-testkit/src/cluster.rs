//! A cluster of `wharf` child processes on 127.0.0.1 with a TCP fault proxy on every
//! node-to-node path (ADR 0012), so a test can cut a node off from the others.
//!
//! ```text
//!  node 1 ──► proxy(1→2) ──► node 2's cluster_listen
//!         ──► proxy(1→3) ──► node 3's cluster_listen
//!  node 2 ──► proxy(2→1) ──► node 1 ...      (n·(n-1) proxies, one per ordered pair)
//! ```
//!
//! Each node's `cluster_peers` names itself at its own listener and every other node at the
//! proxy of the (from, to) pair, so node 1's raft RPCs to node 2 (and their answers) pass
//! only through proxy(1→2). Kafka clients talk to each node directly.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::process::{free_port, BrokerProcess};

/// Settings the harness sets itself; a node started alone drops them.
const CLUSTER_KEYS: &[&str] = &["node_id", "cluster_listen", "cluster_peers"];

struct ProxyInner {
    target: String,
    cut: AtomicBool,
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Both streams of every open forwarded connection, by id.
    conns: Mutex<BTreeMap<u64, (TcpStream, TcpStream)>>,
}

impl ProxyInner {
    fn conns(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (TcpStream, TcpStream)>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn drop_all(&self) {
        for (_, (a, b)) in std::mem::take(&mut *self.conns()) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP proxy on 127.0.0.1 (an ephemeral port, kept for its life) forwarding every
/// connection to `target`. [`Self::cut`] drops every open connection and closes each new one
/// as soon as it is accepted (nothing reaches the target); [`Self::heal`] forwards again.
pub struct FaultProxy {
    port: u16,
    inner: Arc<ProxyInner>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(target: impl Into<String>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a fault proxy")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let inner = Arc::new(ProxyInner {
            target: target.into(),
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::default(),
        });
        let acceptor = {
            let inner = inner.clone();
            std::thread::spawn(move || accept_loop(&listener, &inner))
        };
        Ok(Self {
            port,
            inner,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Drops every forwarded connection and refuses new ones until [`Self::heal`].
    pub fn cut(&self) {
        self.inner.cut.store(true, Ordering::SeqCst);
        self.inner.drop_all();
    }

    pub fn heal(&self) {
        self.inner.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.inner.cut.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.drop_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, inner: &Arc<ProxyInner>) {
    while !inner.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if inner.cut.load(Ordering::SeqCst) {
            // Refused: closed before a byte is read or forwarded.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let inner = inner.clone();
        // Dialing may take a while (a dead target): not on the accepting thread.
        std::thread::spawn(move || forward(client, &inner));
    }
}

fn forward(client: TcpStream, inner: &Arc<ProxyInner>) {
    let _ = client.set_nonblocking(false);
    let Ok(addr) = inner.target.parse() else {
        return;
    };
    let Ok(server) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = inner.next_id.fetch_add(1, Ordering::SeqCst);
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    {
        let mut conns = inner.conns();
        // A cut between the accept and here: this connection must not live on.
        if inner.cut.load(Ordering::SeqCst) || inner.stop.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        conns.insert(id, (c3, s3));
    }
    let upstream = std::thread::spawn(move || pump(client, s2));
    pump(server, c2);
    let _ = upstream.join();
    inner.conns().remove(&id);
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Nodes `1..=n` of a cluster, each a [`BrokerProcess`] with its own data directory
/// `dir/n<id>`, every node-to-node path through its own [`FaultProxy`].
pub struct TestCluster {
    bin: PathBuf,
    dir: PathBuf,
    extra: Vec<(String, String)>,
    cluster_ports: BTreeMap<u64, u16>,
    /// `(from, to)` → the proxy `from` dials to reach `to`.
    proxies: BTreeMap<(u64, u64), FaultProxy>,
    nodes: BTreeMap<u64, BrokerProcess>,
}

impl TestCluster {
    /// Starts nodes `1..=nodes` with `extra_settings` (e.g. `shards=1`) added to each.
    pub fn start(
        bin: impl Into<PathBuf>,
        dir: &Path,
        nodes: u64,
        extra_settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let bin = bin.into();
        let ids: Vec<u64> = (1..=nodes).collect();
        let mut cluster_ports = BTreeMap::new();
        for id in &ids {
            cluster_ports.insert(*id, free_port()?);
        }
        let mut proxies = BTreeMap::new();
        for from in &ids {
            for to in &ids {
                if from != to {
                    let target = format!("127.0.0.1:{}", cluster_ports[to]);
                    proxies.insert((*from, *to), FaultProxy::start(target)?);
                }
            }
        }
        let mut cluster = Self {
            bin,
            dir: dir.to_path_buf(),
            extra: extra_settings
                .iter()
                .filter(|(k, _)| !CLUSTER_KEYS.contains(k))
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            cluster_ports,
            proxies,
            nodes: BTreeMap::new(),
        };
        for id in ids {
            let settings = cluster.settings_of(id);
            let borrowed: Vec<(&str, &str)> = settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let node = BrokerProcess::start(&cluster.bin, &cluster.data_dir(id), &borrowed)
                .with_context(|| format!("starting node {id}"))?;
            cluster.nodes.insert(id, node);
        }
        Ok(cluster)
    }

    fn settings_of(&self, id: u64) -> Vec<(String, String)> {
        let peers = self
            .cluster_ports
            .iter()
            .map(|(peer, port)| {
                if *peer == id {
                    format!("{peer}@127.0.0.1:{port}")
                } else {
                    format!("{peer}@{}", self.proxies[&(id, *peer)].addr())
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut settings = self.extra.clone();
        settings.push(("node_id".into(), id.to_string()));
        settings.push((
            "cluster_listen".into(),
            format!("127.0.0.1:{}", self.cluster_ports[&id]),
        ));
        settings.push(("cluster_peers".into(), peers));
        // One port fewer to collide with on a restart (cluster tests use no AMQP).
        settings.push(("amqp_listen".into(), "off".into()));
        settings
    }

    /// The node ids, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`'s data directory (`dir/n<id>`).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}"))
    }

    /// Every node's Kafka listener, comma-separated (a client's `bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .values()
            .map(BrokerProcess::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// # Panics
    /// On an id outside `1..=n`.
    pub fn node(&self, id: u64) -> &BrokerProcess {
        &self.nodes[&id]
    }

    /// # Panics
    /// On an id outside `1..=n`.
    pub fn node_mut(&mut self, id: u64) -> &mut BrokerProcess {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// The proxy node `from` dials to reach node `to`.
    ///
    /// # Panics
    /// When `from == to` or either is not a node.
    pub fn proxy(&self, from: u64, to: u64) -> &FaultProxy {
        &self.proxies[&(from, to)]
    }

    /// kill -9 of node `id` (no flush, no clean shutdown).
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.node_mut(id).kill9()
    }

    /// SIGTERM of node `id`, waiting for its clean exit.
    pub fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        if !self.node_mut(id).terminate()? {
            bail!("node {id} did not exit cleanly");
        }
        Ok(())
    }

    /// Starts node `id` again on its ports and data directory (killing it first if it runs).
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.node_mut(id).restart()
    }

    /// Deletes node `id`'s data directory: it must be down.
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node_mut(id).is_running() {
            bail!("node {id} is running: kill or stop it before wiping its data");
        }
        let dir = self.data_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("wiping {}", dir.display()))?;
        }
        Ok(())
    }

    /// Cuts every proxy to and from node `id`: it neither reaches nor hears the others.
    pub fn isolate(&self, id: u64) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                proxy.cut();
            }
        }
    }

    /// Heals every proxy.
    pub fn heal(&self) {
        for proxy in self.proxies.values() {
            proxy.heal();
        }
    }

    /// Starts node `id`'s data directory as a single node (no cluster settings, the same
    /// extra settings, fresh ports) to read what it holds; node `id` must be down.
    pub fn start_alone(&mut self, id: u64) -> anyhow::Result<BrokerProcess> {
        if self.node_mut(id).is_running() {
            bail!("node {id} is running: stop it before opening its data alone");
        }
        let borrowed: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Its own log files: the node's cluster logs stay readable after the test.
        BrokerProcess::start_logged(
            &self.bin,
            &self.data_dir(id),
            &borrowed,
            &format!("n{id}-alone"),
        )
    }

    /// The leader of `topic`'s `partition` as a majority of all nodes' Metadata names it;
    /// `None` while no node is named by a majority (an election, or too few live nodes).
    pub fn leader_of(&mut self, topic: &str, partition: i32) -> Option<u64> {
        let answers = self.leaders_named(topic, partition);
        let majority = self.nodes.len() / 2 + 1;
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for leader in answers.values().flatten() {
            *counts.entry(*leader).or_default() += 1;
        }
        counts
            .into_iter()
            .find(|(_, count)| *count >= majority)
            .map(|(leader, _)| leader)
    }

    /// What each live node's Metadata names as the leader of `topic`'s `partition`
    /// (`None`: no leader, or the node did not answer).
    pub fn leaders_named(&mut self, topic: &str, partition: i32) -> BTreeMap<u64, Option<u64>> {
        let mut answers = BTreeMap::new();
        for (id, node) in &mut self.nodes {
            if !node.is_running() {
                continue;
            }
            let leader = metadata(&node.addr(), topic)
                .ok()
                .and_then(|m| partition_leaders(&m, topic).get(&partition).copied())
                .flatten();
            answers.insert(*id, leader);
        }
        answers
    }

    /// Waits until a majority names a leader for every partition of `topic`.
    pub fn wait_for_leaders(&mut self, topic: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let partitions = self
                .nodes
                .values()
                .find_map(|n| metadata(&n.addr(), topic).ok())
                .map_or(0, |m| partition_leaders(&m, topic).len());
            if partitions > 0
                && (0..partitions).all(|p| {
                    self.leader_of(topic, i32::try_from(p).unwrap_or(0))
                        .is_some()
                })
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no leader for every partition of {topic} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// partition → leader (`None` for -1) of `topic` in `m`.
fn partition_leaders(m: &MetadataResponse, topic: &str) -> BTreeMap<i32, Option<u64>> {
    m.topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic) && t.error_code == 0)
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, u64::try_from(p.leader_id.0).ok()))
        .collect()
}

/// One Metadata (v4) request for `topic` to the node at `addr`, on a fresh connection:
/// exactly that node's view (a client library may ask any node it knows).
pub fn metadata(addr: &str, topic: &str) -> anyhow::Result<MetadataResponse> {
    const VERSION: i16 = 4;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let mut bytes = Vec::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("wharf-testkit")))
        .encode(&mut bytes, ApiKey::Metadata.request_header_version(VERSION))?;
    request.encode(&mut bytes, VERSION)?;
    let mut stream = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(&i32::try_from(bytes.len())?.to_be_bytes())?;
    stream.write_all(&bytes)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = usize::try_from(i32::from_be_bytes(len))?;
    if len > 64 << 20 {
        bail!("Metadata answer of {len} bytes");
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let mut body = bytes::Bytes::from(body);
    ResponseHeader::decode(&mut body, ApiKey::Metadata.response_header_version(VERSION))?;
    MetadataResponse::decode(&mut body, VERSION)
}

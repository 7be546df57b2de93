//! An idempotent producer (librdkafka, `enable.idempotence=true`) whose connections are cut
//! every few hundred milliseconds by a proxy, and whose broker is killed with -9 and
//! restarted once, delivers 100,000 messages: each exactly once, in order per partition.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::{eventually, start_broker};

const MESSAGES: usize = 100_000;
const PARTITIONS: i32 = 3;

/// A loopback TCP proxy that drops every connection whenever `cuts` changes while `armed`.
/// At most 64 connections at once; more wait for a slot.
struct CuttingProxy {
    cuts: watch::Sender<u64>,
    count: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(listener: TcpListener, upstream: String) -> Self {
        let (cuts, _) = watch::channel(0u64);
        let proxy = Self {
            cuts,
            count: Arc::default(),
        };
        let cuts = proxy.cuts.clone();
        let slots = Arc::new(Semaphore::new(64));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = cuts.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        proxy
    }

    /// Drops every open connection.
    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_producer_survives_cut_connections_and_kill_9() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap().to_string();
    let proxy_port = listener.local_addr().unwrap().port().to_string();
    let (_dir, mut broker) = start_broker(&[("advertised_port", &proxy_port)]);
    let proxy = Arc::new(CuttingProxy::start(listener, broker.addr()));
    wharf_testkit::create_topic(&proxy_addr, "exactly-once", PARTITIONS, &[])
        .await
        .unwrap();

    let producer = wharf_testkit::producer(
        &proxy_addr,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "300000"),
            ("linger.ms", "2"),
            ("batch.num.messages", "200"),
            ("reconnect.backoff.ms", "10"),
            ("reconnect.backoff.max.ms", "200"),
            ("retry.backoff.ms", "20"),
            ("queue.buffering.max.messages", "200000"),
        ],
    )
    .unwrap();

    // Cut every 200-400 ms until told to stop.
    let cutting = Arc::new(AtomicBool::new(true));
    let cutter = {
        let (proxy, cutting) = (proxy.clone(), cutting.clone());
        tokio::spawn(async move {
            let mut round = 0u64;
            while cutting.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200 + (round * 73) % 200)).await;
                proxy.cut();
                round += 1;
            }
        })
    };

    let mut deliveries = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let value = i.to_string();
        let partition = i32::try_from(i).unwrap() % PARTITIONS;
        let record = FutureRecord::<str, str>::to("exactly-once")
            .partition(partition)
            .payload(&value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    let started = Instant::now();
    for (i, d) in deliveries.into_iter().enumerate() {
        if i == MESSAGES / 4 {
            // Kill -9 with batches in flight; librdkafka resends them to the restarted
            // broker, which must recognise the ones already written from its log.
            tokio::task::block_in_place(|| {
                broker.kill9().unwrap();
                std::thread::sleep(Duration::from_millis(300));
                broker.restart().unwrap();
            });
            // No snapshot yet (kill -9 before the first interval): the state came from the log.
            // The Kafka port is bound before recovery (see server.rs), so `restart` returning
            // does not mean the state is loaded yet: wait for its log line.
            tokio::task::block_in_place(|| {
                eventually("producer state loaded after the restart", || {
                    broker.log().contains("producer state loaded")
                });
            });
            let log = broker.log();
            assert!(
                log.contains("producer state loaded") && !log.contains("replayed=0"),
                "producer state not replayed from the log:\n{log}"
            );
        }
        let remaining = Duration::from_secs(300).saturating_sub(started.elapsed());
        let delivery = tokio::time::timeout(remaining, d)
            .await
            .unwrap_or_else(|_| panic!("message {i} not delivered in time"))
            .unwrap();
        if let Err((error, _)) = delivery {
            panic!("message {i} failed: {error}");
        }
    }
    cutting.store(false, Ordering::Relaxed);
    cutter.await.unwrap();
    assert!(
        proxy.count.load(Ordering::Relaxed) >= 5,
        "the proxy cut connections only {} times",
        proxy.count.load(Ordering::Relaxed)
    );

    let values = tokio::task::spawn_blocking(move || read_all(&proxy_addr))
        .await
        .unwrap();
    for (partition, got) in values.iter().enumerate() {
        let expected: Vec<usize> = (partition..MESSAGES).step_by(PARTITIONS as usize).collect();
        if got != &expected {
            let first_bad = got
                .iter()
                .zip(&expected)
                .position(|(g, e)| g != e)
                .unwrap_or(got.len().min(expected.len()));
            panic!(
                "partition {partition}: {} values, {} expected; first difference at index \
                 {first_bad}: {:?} vs {:?}",
                got.len(),
                expected.len(),
                got.get(first_bad.saturating_sub(2)..(first_bad + 3).min(got.len())),
                expected.get(first_bad.saturating_sub(2)..(first_bad + 3).min(expected.len())),
            );
        }
    }
    drop(broker);
}

/// Every value of every partition, in offset order.
fn read_all(addr: &str) -> Vec<Vec<usize>> {
    let ends = wharf_testkit::watermarks(addr, "exactly-once", PARTITIONS).unwrap();
    let consumer = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("exactly-once", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let total: i64 = ends.values().map(|(lo, hi)| hi - lo).sum();
    let mut values = vec![Vec::new(); PARTITIONS as usize];
    let mut read = 0i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while read < total {
        assert!(Instant::now() < deadline, "read {read} of {total}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value: usize = std::str::from_utf8(m.payload().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            values[usize::try_from(m.partition()).unwrap()].push(value);
            read += 1;
        }
    }
    values
}

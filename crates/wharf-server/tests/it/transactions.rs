//! Kafka transactions with librdkafka against a real broker process: visibility under
//! read_committed and read_uncommitted, the last stable offset, consume-transform-produce
//! offsets, zombie fencing, the coordinator's timeout abort, and kill -9 mid-transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::start_broker;

const WAIT: Duration = Duration::from_secs(30);

fn txn_producer(
    addr: &str,
    transactional_id: &str,
    extra: &[(&str, &str)],
) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("transactional.id", transactional_id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let p: ThreadedProducer<DefaultProducerContext> = c.create().unwrap();
    p.init_transactions(WAIT).unwrap();
    p
}

fn plain_producer(addr: &str) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("linger.ms", "5");
    c.create().unwrap()
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, partition: i32, value: &str) {
    p.send(
        BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(value),
    )
    .map_err(|(e, _)| e)
    .unwrap();
}

fn create_topic(addr: &str, topic: &str, partitions: i32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wharf_testkit::create_topic(addr, topic, partitions, &[]))
        .unwrap();
}

fn reader(addr: &str, topic: &str, partitions: i32, isolation: &str) -> BaseConsumer {
    let c = wharf_testkit::base_consumer(addr, &[("isolation.level", isolation)]).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// Reads values until `done` holds for what was read; panics after 60 s.
fn read_until(c: &BaseConsumer, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "timed out; read so far: {seen:?}"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    seen
}

fn count_prefix(seen: &[String], prefix: &str) -> usize {
    seen.iter().filter(|v| v.starts_with(prefix)).count()
}

#[test]
fn committed_transactions_are_visible_and_aborted_ones_only_to_read_uncommitted() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    create_topic(&addr, "txn-visibility", 2);
    let p = txn_producer(&addr, "visibility", &[]);
    for (prefix, commit) in [("committed-", true), ("aborted-", false), ("end-", true)] {
        p.begin_transaction().unwrap();
        for i in 0..10 {
            send(&p, "txn-visibility", i % 2, &format!("{prefix}{i}"));
        }
        if commit {
            p.commit_transaction(WAIT).unwrap();
        } else {
            p.flush(WAIT).unwrap();
            p.abort_transaction(WAIT).unwrap();
        }
    }
    let committed = read_until(&reader(&addr, "txn-visibility", 2, "read_committed"), |s| {
        count_prefix(s, "end-") == 10
    });
    assert_eq!(count_prefix(&committed, "committed-"), 10, "{committed:?}");
    assert_eq!(count_prefix(&committed, "aborted-"), 0, "{committed:?}");
    let uncommitted = read_until(
        &reader(&addr, "txn-visibility", 2, "read_uncommitted"),
        |s| count_prefix(s, "end-") == 10,
    );
    assert_eq!(count_prefix(&uncommitted, "committed-"), 10);
    assert_eq!(
        count_prefix(&uncommitted, "aborted-"),
        10,
        "{uncommitted:?}"
    );
}

#[test]
fn read_committed_never_reads_past_an_open_transaction() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    create_topic(&addr, "txn-lso", 1);
    let p = txn_producer(&addr, "lso", &[]);
    p.begin_transaction().unwrap();
    send(&p, "txn-lso", 0, "open");
    p.flush(WAIT).unwrap();
    let plain = plain_producer(&addr);
    send(&plain, "txn-lso", 0, "after");
    plain.flush(WAIT).unwrap();
    // Both are in the log: a read_uncommitted reader sees them.
    read_until(&reader(&addr, "txn-lso", 1, "read_uncommitted"), |s| {
        s.len() == 2
    });
    let committed = reader(&addr, "txn-lso", 1, "read_committed");
    // ListOffsets latest: the LSO for read_committed, the high watermark otherwise.
    let high = |c: &BaseConsumer| c.fetch_watermarks("txn-lso", 0, WAIT).unwrap().1;
    assert_eq!(high(&committed), 0);
    assert_eq!(high(&reader(&addr, "txn-lso", 1, "read_uncommitted")), 2);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(m) = committed.poll(Duration::from_millis(200)) {
            panic!("read past an open transaction: {:?}", m.map(|m| m.offset()));
        }
    }
    p.commit_transaction(WAIT).unwrap();
    let seen = read_until(&committed, |s| s.len() == 2);
    assert_eq!(seen, vec!["open".to_string(), "after".to_string()]);
    assert_eq!(high(&committed), 3, "after the commit marker");
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    create_topic(&addr, "txn-zombie", 1);
    let zombie = txn_producer(&addr, "zombie", &[]);
    zombie.begin_transaction().unwrap();
    send(&zombie, "txn-zombie", 0, "zombie-1");
    zombie.flush(WAIT).unwrap();
    let successor = txn_producer(&addr, "zombie", &[]);
    successor.begin_transaction().unwrap();
    send(&successor, "txn-zombie", 0, "successor");
    successor.commit_transaction(WAIT).unwrap();
    // The zombie's next send fails (reported at the latest by its commit).
    let sent = zombie.send(
        BaseRecord::<(), str>::to("txn-zombie")
            .partition(0)
            .payload("zombie-2"),
    );
    let outcome = match sent {
        Err((e, _)) => Err(e),
        Ok(()) => zombie.commit_transaction(WAIT),
    };
    // librdkafka: "ProduceRequest ... failed: ... old epoch ...: transactional producer
    // fenced by newer producer instance", a fatal error.
    match outcome {
        Err(rdkafka::error::KafkaError::Transaction(e)) => {
            assert!(e.is_fatal(), "{e}");
            assert!(e.to_string().contains("fenced"), "{e}");
        }
        other => panic!("the fenced producer was not refused as fenced: {other:?}"),
    }
    let seen = read_until(&reader(&addr, "txn-zombie", 1, "read_committed"), |s| {
        s.contains(&"successor".to_string())
    });
    assert_eq!(count_prefix(&seen, "zombie"), 0, "{seen:?}");
}

#[test]
fn a_transaction_left_open_past_its_timeout_is_aborted_by_the_broker() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    create_topic(&addr, "txn-timeout", 1);
    let p = txn_producer(
        &addr,
        "forgetful",
        &[
            ("transaction.timeout.ms", "2000"),
            ("message.timeout.ms", "2000"),
        ],
    );
    p.begin_transaction().unwrap();
    send(&p, "txn-timeout", 0, "abandoned");
    p.flush(WAIT).unwrap();
    let plain = plain_producer(&addr);
    send(&plain, "txn-timeout", 0, "later");
    plain.flush(WAIT).unwrap();
    // Only the broker's abort lets a read_committed reader reach "later".
    let seen = read_until(&reader(&addr, "txn-timeout", 1, "read_committed"), |s| {
        s.contains(&"later".to_string())
    });
    assert_eq!(seen, vec!["later".to_string()]);
    assert!(
        broker.log().contains("transaction timed out; aborting"),
        "the abort did not come from the broker's timeout"
    );
    let uncommitted = read_until(&reader(&addr, "txn-timeout", 1, "read_uncommitted"), |s| {
        s.len() == 2
    });
    assert_eq!(uncommitted[0], "abandoned");
}

#[test]
fn group_offsets_sent_to_a_transaction_move_only_when_it_commits() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    create_topic(&addr, "ctp-in", 1);
    create_topic(&addr, "ctp-out", 1);
    let plain = plain_producer(&addr);
    for i in 0..10 {
        send(&plain, "ctp-in", 0, &format!("in-{i}"));
    }
    plain.flush(WAIT).unwrap();
    let consumer = wharf_testkit::base_consumer(
        &addr,
        &[("group.id", "ctp"), ("isolation.level", "read_committed")],
    )
    .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ctp-in", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let input = read_until(&consumer, |s| s.len() == 10);
    let committed = |c: &BaseConsumer| -> Offset {
        let mut want = TopicPartitionList::new();
        want.add_partition("ctp-in", 0);
        c.committed_offsets(want, WAIT)
            .unwrap()
            .find_partition("ctp-in", 0)
            .unwrap()
            .offset()
    };
    let p = txn_producer(&addr, "ctp", &[]);
    for (upto, commit) in [(5i64, false), (5, true)] {
        p.begin_transaction().unwrap();
        for v in input.iter().take(usize::try_from(upto).unwrap()) {
            send(&p, "ctp-out", 0, &v.replace("in-", "out-"));
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("ctp-in", 0, Offset::Offset(upto))
            .unwrap();
        p.send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), WAIT)
            .unwrap();
        if commit {
            assert_eq!(
                committed(&consumer),
                Offset::Invalid,
                "moved before the commit"
            );
            p.commit_transaction(WAIT).unwrap();
            assert_eq!(committed(&consumer), Offset::Offset(upto));
        } else {
            p.abort_transaction(WAIT).unwrap();
            assert_eq!(
                committed(&consumer),
                Offset::Invalid,
                "an abort moved the offsets"
            );
        }
    }
}

#[test]
fn after_kill_9_mid_transactions_no_partial_transaction_is_visible() {
    const PER_TXN: usize = 6;
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    create_topic(&addr, "txn-crash", 3);
    let acked: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let started = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (addr, acked, started) = (addr.clone(), acked.clone(), started.clone());
        std::thread::spawn(move || {
            let p = txn_producer(&addr, "crashy", &[]);
            for txn in 0.. {
                started.store(txn, Ordering::SeqCst);
                if p.begin_transaction().is_err() {
                    return;
                }
                for k in 0..PER_TXN {
                    let value = format!("t{txn}-{k}");
                    let partition = i32::try_from(k % 3).unwrap();
                    if p.send(
                        BaseRecord::<(), str>::to("txn-crash")
                            .partition(partition)
                            .payload(&value),
                    )
                    .is_err()
                    {
                        return;
                    }
                }
                let ok = if txn % 3 == 2 {
                    p.abort_transaction(Duration::from_secs(5)).is_ok()
                } else {
                    let ok = p.commit_transaction(Duration::from_secs(5)).is_ok();
                    if ok {
                        acked.lock().unwrap().insert(txn);
                    }
                    ok
                };
                if !ok {
                    return;
                }
            }
        })
    };
    crate::eventually("30 transactions started", || {
        started.load(Ordering::SeqCst) >= 30
    });
    broker.kill9().unwrap();
    worker.join().unwrap();
    broker.restart().unwrap();
    let addr = broker.addr();
    // A new incarnation fences the old one and aborts whatever it left open.
    let p = txn_producer(&addr, "crashy", &[]);
    p.begin_transaction().unwrap();
    for partition in 0..3 {
        send(&p, "txn-crash", partition, "end");
    }
    p.commit_transaction(WAIT).unwrap();
    let seen = read_until(&reader(&addr, "txn-crash", 3, "read_committed"), |s| {
        count_prefix(s, "end") == 3
    });
    let mut per_txn: BTreeMap<usize, usize> = BTreeMap::new();
    for v in seen.iter().filter(|v| v.starts_with('t')) {
        let txn: usize = v[1..].split('-').next().unwrap().parse().unwrap();
        *per_txn.entry(txn).or_default() += 1;
    }
    for (txn, count) in &per_txn {
        assert_eq!(*count, PER_TXN, "transaction {txn} is partial");
        assert_ne!(txn % 3, 2, "aborted transaction {txn} is visible");
    }
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 20, "acked {}", acked.len());
    for txn in acked.iter() {
        assert!(
            per_txn.contains_key(txn),
            "committed transaction {txn} is missing"
        );
    }
}

#[test]
fn wharf_txn_lists_and_describes_an_open_transaction() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    create_topic(&addr, "txn-cli", 2);
    let p = txn_producer(&addr, "cli-tx", &[]);
    p.begin_transaction().unwrap();
    send(&p, "txn-cli", 1, "v");
    p.flush(WAIT).unwrap();
    let wharf = |args: &[&str]| {
        let out = std::process::Command::new(crate::wharf_bin())
            .args(["txn", "--bootstrap-server", &addr])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = wharf(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("cli-tx ") && l.ends_with("Ongoing")),
        "{list}"
    );
    let described = wharf(&["describe", "cli-tx"]);
    assert!(described.contains("Ongoing"), "{described}");
    assert!(described.lines().any(|l| l == "txn-cli  1"), "{described}");
    p.commit_transaction(WAIT).unwrap();
    let list = wharf(&["list", "--state", "CompleteCommit"]);
    assert!(list.lines().any(|l| l.starts_with("cli-tx ")), "{list}");
}

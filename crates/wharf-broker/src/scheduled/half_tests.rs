//! Half messages on a `transaction` topic against a real broker on a temporary directory:
//! commit (twice) delivers once, rollback never, an unanswered half record is checked back
//! on `wharf.txn-check.<group>` until answered, or abandoned after the last check; all of it
//! across a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};

use super::{ABANDONED_TOPIC, CHECK_TOPIC_PREFIX};
use crate::producer::now_ms;
use crate::{Acks, Broker, BrokerConfig, StorageConfig, TopicSpec};

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let mut sc = StorageConfig::new(dir);
    sc.shards = 1;
    Broker::open(BrokerConfig::default(), sc).unwrap()
}

fn create(b: &Broker, check_after_ms: &str, interval_ms: &str, max: &str) {
    let spec = TopicSpec {
        name: "tx".into(),
        partitions: 2,
        replication_factor: 1,
        configs: BTreeMap::from(
            [
                ("wharf.message.type", "transaction"),
                ("wharf.txn.check.after.ms", check_after_ms),
                ("wharf.txn.check.interval.ms", interval_ms),
                ("wharf.txn.check.max", max),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        ),
    };
    b.create_topic(&spec, false).unwrap();
}

async fn send(b: &Broker, partition: i32, action: &str, txn_id: &str, value: &[u8]) {
    let mut builder = BatchBuilder::new(now_ms());
    builder.push(
        Some(txn_id.as_bytes()),
        Some(value),
        &[
            (b"wharf-txn", Some(action.as_bytes())),
            (b"wharf-txn-id", Some(txn_id.as_bytes())),
            (b"wharf-txn-group", Some(b"shop")),
        ],
        now_ms(),
    );
    let ack = b
        .produce("tx", partition, Bytes::from(builder.build()), Acks::All)
        .await
        .unwrap();
    assert_eq!(ack.base_offset, -1);
}

/// `(key, value, headers)` of one record.
type Read = (Vec<u8>, Vec<u8>, Vec<(String, String)>);

/// `(key, value, headers)` of every record of `topic`[partition].
fn read(b: &Broker, topic: &str, partition: i32) -> Vec<Read> {
    let Ok(p) = b.partition(topic, partition) else {
        return Vec::new();
    };
    let read = p.log.read(0, 1 << 20).unwrap();
    let mut out = Vec::new();
    for range in wharf_record::split_batches(&read.records).unwrap() {
        let h = BatchHeader::parse(&read.records[range]).unwrap();
        for r in RecordIter::new(&h).unwrap() {
            let r = r.unwrap();
            let headers = r
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v.unwrap_or_default()).into_owned(),
                    )
                })
                .collect();
            out.push((
                r.key.unwrap_or_default().to_vec(),
                r.value.unwrap_or_default().to_vec(),
                headers,
            ));
        }
    }
    out
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_twice_delivers_once_and_rollback_never() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "60000", "60000", "15");
    send(&b, 1, "prepare", "t-commit", b"paid").await;
    send(&b, 1, "prepare", "t-rollback", b"cancelled").await;
    assert_eq!(b.scheduler().waiting("tx").0, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(read(&b, "tx", 1).is_empty(), "a half record is invisible");
    // The answers may come on another partition of the topic.
    send(&b, 0, "commit", "t-commit", b"").await;
    send(&b, 0, "commit", "t-commit", b"").await;
    send(&b, 1, "rollback", "t-rollback", b"").await;
    until("the commit", || read(&b, "tx", 1).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = read(&b, "tx", 1);
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(
        (got[0].0.as_slice(), got[0].1.as_slice()),
        (&b"t-commit"[..], &b"paid"[..])
    );
    assert!(
        read(&b, "tx", 0).is_empty(),
        "commit and rollback records never appear"
    );
    assert_eq!(b.scheduler().waiting("tx").0, 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_half_is_checked_back_until_committed_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let checks = format!("{CHECK_TOPIC_PREFIX}shop");
    {
        let b = open(dir.path());
        create(&b, "100", "100", "50");
        send(&b, 0, "prepare", "t-1", b"v").await;
        until("two check-backs", || read(&b, &checks, 0).len() >= 2).await;
        let got = read(&b, &checks, 0);
        assert_eq!(got[0].0, b"t-1");
        assert!(got[0].2.contains(&("wharf-txn-topic".into(), "tx".into())));
        assert!(got[0]
            .2
            .contains(&("wharf-txn-check-count".into(), "1".into())));
        assert!(got[1]
            .2
            .contains(&("wharf-txn-check-count".into(), "2".into())));
        assert!(read(&b, "tx", 0).is_empty());
        b.shutdown().await;
    }
    let b = open(dir.path());
    let before = read(&b, &checks, 0).len();
    until("a check-back after the restart", || {
        read(&b, &checks, 0).len() > before
    })
    .await;
    let last = read(&b, &checks, 0).pop().unwrap();
    let count = last
        .2
        .iter()
        .find(|(n, _)| n == "wharf-txn-check-count")
        .unwrap();
    assert_eq!(count.1, (before + 1).to_string(), "the count continues");
    send(&b, 0, "commit", "t-1", b"").await;
    until("the commit", || read(&b, "tx", 0).len() == 1).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_half_is_abandoned_after_the_last_check() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b, "50", "50", "3");
    send(&b, 1, "prepare", "t-lost", b"lost value").await;
    until("abandonment", || !read(&b, ABANDONED_TOPIC, 0).is_empty()).await;
    let checks = read(&b, &format!("{CHECK_TOPIC_PREFIX}shop"), 0);
    assert_eq!(checks.len(), 3, "exactly wharf.txn.check.max checks");
    let gone = read(&b, ABANDONED_TOPIC, 0);
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].0.as_slice(), gone[0].1.as_slice()),
        (&b"t-lost"[..], &b"lost value"[..])
    );
    assert!(gone[0]
        .2
        .contains(&("wharf-txn-id".into(), "t-lost".into())));
    assert!(gone[0].2.contains(&("wharf-txn-topic".into(), "tx".into())));
    assert!(read(&b, "tx", 1).is_empty());
    assert_eq!(b.scheduler().waiting("tx").0, 0);
    // A late commit finds nothing.
    send(&b, 1, "commit", "t-lost", b"").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(read(&b, "tx", 1).is_empty());
    b.shutdown().await;
}

//! The driver against a real broker on a temporary directory: markers, LSO, aborted
//! ranges and transactional offsets, before and after a reopen.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use wharf_record::BatchBuilder;

use crate::group::api::{CommitPartition, TxnCommitMember};
use crate::group::GroupError;
use crate::txn::{TxnPartition, TxnState};
use crate::{Acks, Broker, BrokerConfig, StorageConfig, TopicSpec};

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let mut sc = StorageConfig::new(dir);
    sc.shards = 1;
    Broker::open(BrokerConfig::default(), sc).unwrap()
}

fn txn_batch(producer_id: i64, epoch: i16, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new(1_000)
        .transactional()
        .producer(producer_id, epoch, seq);
    b.push(None, Some(b"v"), &[], 1_000);
    Bytes::from(b.build())
}

fn lso(b: &Broker) -> (i64, i64) {
    let p = b.partition("t", 0).unwrap();
    (b.last_stable_offset(&p), p.log.high_watermark())
}

#[tokio::test]
async fn markers_move_the_lso_and_survive_a_reopen_with_or_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, epoch) = {
        let b = open(dir.path());
        let spec = TopicSpec {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
        };
        b.create_topic(&spec, false).unwrap();
        let (pid, epoch) = b.init_transactional_producer("tx", 60_000).await.unwrap();
        let part = [TxnPartition::new("t", 0)];
        // Aborted: offsets 0 (data), 1 (marker).
        b.add_partitions_to_txn("tx", pid, epoch, &part)
            .await
            .unwrap();
        b.produce("t", 0, txn_batch(pid, epoch, 0), Acks::All)
            .await
            .unwrap();
        assert_eq!(lso(&b), (0, 1));
        b.end_txn("tx", pid, epoch, false).await.unwrap();
        assert_eq!(lso(&b), (2, 2));
        // Committed with offsets: 2 (data), 3 (marker).
        b.add_partitions_to_txn("tx", pid, epoch, &part)
            .await
            .unwrap();
        b.add_offsets_to_txn("tx", pid, epoch, "app").await.unwrap();
        b.produce("t", 0, txn_batch(pid, epoch, 1), Acks::All)
            .await
            .unwrap();
        let offsets = vec![CommitPartition {
            topic: "t".into(),
            partition: 0,
            offset: 42,
            leader_epoch: -1,
            metadata: None,
        }];
        // A zombie naming a consumer generation the group never had is refused (KIP-447).
        let zombie = TxnCommitMember {
            generation_id: 4,
            member_id: "zombie".into(),
            group_instance_id: None,
        };
        assert!(matches!(
            b.txn_offset_commit("tx", pid, epoch, "app", &zombie, offsets.clone())
                .await,
            Err(crate::BrokerError::Group(
                GroupError::IllegalGeneration { .. }
            ))
        ));
        b.txn_offset_commit("tx", pid, epoch, "app", &TxnCommitMember::none(), offsets)
            .await
            .unwrap();
        assert_eq!(b.groups().fetch_offsets("app", None).unwrap().len(), 0);
        b.end_txn("tx", pid, epoch, true).await.unwrap();
        assert_eq!(b.groups().fetch_offsets("app", None).unwrap()[0].offset, 42);
        // Open: 4 (data).
        b.add_partitions_to_txn("tx", pid, epoch, &part)
            .await
            .unwrap();
        b.produce("t", 0, txn_batch(pid, epoch, 2), Acks::All)
            .await
            .unwrap();
        assert_eq!(lso(&b), (4, 5));
        // Dropped without shutdown: no snapshot, the log is replayed.
        (pid, epoch)
    };
    for clean in [false, true] {
        let b = open(dir.path());
        assert_eq!(lso(&b), (4, 5), "clean shutdown before: {clean}");
        let p = b.partition("t", 0).unwrap();
        let aborted = b.aborted_transactions(&p, 0, 5);
        assert_eq!(aborted.len(), 1);
        assert_eq!((aborted[0].first_offset, aborted[0].last_offset), (0, 1));
        let meta = b.transactions().describe("tx").unwrap();
        assert_eq!(meta.state, TxnState::Ongoing);
        assert_eq!((meta.producer_id, meta.producer_epoch), (pid, epoch));
        assert_eq!(b.groups().fetch_offsets("app", None).unwrap()[0].offset, 42);
        b.shutdown().await;
    }
}

/// A transactional batch is written only into its producer's open transaction, to a
/// partition added to it (KIP-890's check); otherwise the produce fails and nothing is stored.
#[tokio::test]
async fn a_transactional_produce_needs_its_partition_in_the_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let spec = TopicSpec {
        name: "t".into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    b.create_topic(&spec, false).unwrap();
    let (pid, epoch) = b.init_transactional_producer("tx", 60_000).await.unwrap();
    let not_added = b.produce("t", 0, txn_batch(pid, epoch, 0), Acks::All).await;
    assert!(
        matches!(
            not_added,
            Err(crate::BrokerError::Txn(
                crate::txn::TxnError::InvalidTxnState { .. }
            ))
        ),
        "{not_added:?}"
    );
    let unknown = b.produce("t", 0, txn_batch(pid + 1, 0, 0), Acks::All).await;
    assert!(unknown.is_err(), "a producer id no transaction owns");
    b.add_partitions_to_txn("tx", pid, epoch, &[TxnPartition::new("t", 0)])
        .await
        .unwrap();
    b.produce("t", 0, txn_batch(pid, epoch, 0), Acks::All)
        .await
        .unwrap();
    b.end_txn("tx", pid, epoch, true).await.unwrap();
    let after_end = b.produce("t", 0, txn_batch(pid, epoch, 1), Acks::All).await;
    assert!(after_end.is_err(), "the transaction is over");
    // One data batch and one commit marker: nothing refused was stored.
    assert_eq!(b.partition("t", 0).unwrap().log.high_watermark(), 2);
}

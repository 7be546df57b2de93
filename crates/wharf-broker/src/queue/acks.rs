//! Settled offsets of queues, persisted as keyed records of `__wharf_queue_acks` (key: the
//! queue's log topic; value: big-endian i64 offsets; no value: the queue was deleted) and
//! replayed at start. Written with the leader durability: a settle survives a process kill
//! (ADR 0003); a power loss may redeliver a message, never lose one.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use wharf_record::BatchBuilder;

use crate::internal_log::replay_keyed;
use crate::{Acks, Broker, BrokerError, PendingProduce};

pub const QUEUE_ACKS_TOPIC: &str = "__wharf_queue_acks";

/// Reads and appends the settled offsets of every queue.
pub struct AckLog;

impl AckLog {
    /// Settled offsets per queue topic, replayed from the start of `__wharf_queue_acks`.
    /// Blocking: file reads.
    pub fn replay(broker: &Broker) -> Result<HashMap<String, BTreeSet<i64>>, BrokerError> {
        let topic = broker.internal_topic(QUEUE_ACKS_TOPIC, 1)?;
        let mut settled: HashMap<String, BTreeSet<i64>> = HashMap::new();
        let Some(partition) = topic.partitions.first() else {
            return Ok(settled);
        };
        replay_keyed(&partition.log, |key, value| {
            let name = String::from_utf8_lossy(key).into_owned();
            match value {
                None => {
                    settled.remove(&name);
                }
                Some(bytes) => {
                    let set = settled.entry(name).or_default();
                    for chunk in bytes.chunks_exact(8) {
                        let mut raw = [0u8; 8];
                        raw.copy_from_slice(chunk);
                        set.insert(i64::from_be_bytes(raw));
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| BrokerError::Metadata(format!("{QUEUE_ACKS_TOPIC}: {e}")))?;
        Ok(settled)
    }

    /// Appends settled `offsets` of `queue_topic` (`None`: forget the queue).
    pub fn submit(
        broker: &Broker,
        queue_topic: &str,
        offsets: Option<&[i64]>,
    ) -> Result<PendingProduce, BrokerError> {
        broker.internal_topic(QUEUE_ACKS_TOPIC, 1)?;
        let value: Option<Vec<u8>> =
            offsets.map(|o| o.iter().flat_map(|x| x.to_be_bytes()).collect());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut batch = BatchBuilder::new(now);
        batch.push(Some(queue_topic.as_bytes()), value.as_deref(), &[], now);
        broker.submit_produce(
            QUEUE_ACKS_TOPIC,
            0,
            Bytes::from(batch.build()),
            Acks::Leader,
        )
    }
}

//! Client quotas on the wire: a request over its client's quota is answered with
//! `throttle_time_ms`, and the client is held back that long. Newer versions (KIP-219:
//! Produce v6+, Fetch v8+) get the answer at once and the connection stops reading for the
//! throttle time, as Kafka mutes the channel (the client waits too); older versions get the
//! answer late.

use std::sync::Mutex;

use tokio::time::Instant;
use wharf_broker::Broker;

/// When a connection may read its next request.
#[derive(Debug, Default)]
pub struct Mute {
    until: Mutex<Option<Instant>>,
}

impl Mute {
    fn hold(&self, until: Instant) {
        let mut slot = self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(slot.map_or(until, |u| u.max(until)));
    }

    /// Waits until the connection is no longer muted.
    pub async fn wait(&self) {
        let until = *self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// Counts `amount` against `key` for `client_id`; returns `throttle_time_ms` for the answer
/// after muting the connection (`kip219`) or waiting (older versions) that long.
pub async fn apply(
    broker: &Broker,
    mute: &Mute,
    client_id: &str,
    key: &'static str,
    amount: u64,
    kip219: bool,
) -> i32 {
    let wait = broker.throttle(client_id, key, amount);
    if wait.is_zero() {
        return 0;
    }
    let millis = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
    metrics::counter!(
        "wharf_kafka_throttle_time_ms_total",
        "client_id" => client_id.to_string(),
        "quota" => key
    )
    .increment(u64::try_from(millis).unwrap_or(0));
    if kip219 {
        mute.hold(Instant::now() + wait);
    } else {
        tokio::time::sleep(wait).await;
    }
    millis
}

/// A response with a `throttle_time_ms` field, present from version `SINCE` on.
pub trait Throttled {
    const SINCE: i16;
    fn throttle_time_ms(&mut self) -> &mut i32;
}

macro_rules! throttled {
    ($($response:ident since $since:expr),* $(,)?) => {
        $(impl Throttled for kafka_protocol::messages::$response {
            const SINCE: i16 = $since;
            fn throttle_time_ms(&mut self) -> &mut i32 {
                &mut self.throttle_time_ms
            }
        })*
    };
}

// The first version of each response with the field (Kafka's message schemas).
throttled! {
    AddOffsetsToTxnResponse since 0,
    AddPartitionsToTxnResponse since 0,
    AlterClientQuotasResponse since 0,
    AlterConfigsResponse since 0,
    ConsumerGroupDescribeResponse since 0,
    ConsumerGroupHeartbeatResponse since 0,
    CreatePartitionsResponse since 0,
    CreateTopicsResponse since 2,
    DeleteGroupsResponse since 0,
    DeleteRecordsResponse since 0,
    DeleteTopicsResponse since 1,
    DescribeClientQuotasResponse since 0,
    DescribeClusterResponse since 0,
    DescribeConfigsResponse since 0,
    DescribeGroupsResponse since 1,
    DescribeTransactionsResponse since 0,
    EndTxnResponse since 0,
    FetchResponse since 1,
    FindCoordinatorResponse since 1,
    HeartbeatResponse since 1,
    IncrementalAlterConfigsResponse since 0,
    InitProducerIdResponse since 0,
    JoinGroupResponse since 2,
    LeaveGroupResponse since 1,
    ListGroupsResponse since 1,
    ListOffsetsResponse since 2,
    ListTransactionsResponse since 0,
    MetadataResponse since 3,
    OffsetCommitResponse since 3,
    OffsetDeleteResponse since 0,
    OffsetFetchResponse since 3,
    ProduceResponse since 1,
    SyncGroupResponse since 1,
    TxnOffsetCommitResponse since 0,
    ShareGroupHeartbeatResponse since 0,
    ShareGroupDescribeResponse since 0,
    ShareFetchResponse since 0,
    ShareAcknowledgeResponse since 0,
    DescribeShareGroupOffsetsResponse since 0,
    AlterShareGroupOffsetsResponse since 0,
    DeleteShareGroupOffsetsResponse since 0,
}

/// Kafka's `request_percentage` quota: counts the thread time `work` a request cost against
/// its client's quota and, when over it, puts the throttle time in the answer (keeping a
/// larger byte-rate throttle already there) and mutes the connection; versions without the
/// field get their answer late instead.
pub async fn request_time<R: Throttled>(
    broker: &Broker,
    mute: &Mute,
    client_id: &str,
    work: std::time::Duration,
    version: i16,
    response: &mut R,
) {
    let nanos = u64::try_from(work.as_nanos()).unwrap_or(u64::MAX);
    let kip219 = version >= R::SINCE;
    let millis = apply(
        broker,
        mute,
        client_id,
        wharf_broker::quota::REQUEST_PERCENTAGE,
        nanos,
        kip219,
    )
    .await;
    if kip219 && millis > 0 {
        let field = response.throttle_time_ms();
        *field = (*field).max(millis);
    }
}

//! The Prometheus side of Wharf's metrics (ADR 0005). Storage, broker and the Kafka front end
//! record through the `metrics` facade; this module installs the process-wide Prometheus
//! recorder (histogram buckets, help texts) before anything records, and renders a scrape:
//! the recorded metrics, then gauges computed from broker state at scrape time (bytes per
//! topic, consumer lag) through a recorder that lives for that scrape only, so deleted
//! topics and groups disappear from the output instead of going stale.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wharf_broker::Broker;

use crate::lag;

/// Request latency: 100 µs (a metadata answer) up to 30 s (a long-polling fetch).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// A roll takes milliseconds (a small segment) to about a second (a 1 GiB segment of small
/// batches on a slow disk).
const ROLL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// fdatasync: 50 µs (a fast NVMe) up to 2.5 s (a struggling disk).
const FDATASYNC_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];
const GROUP_COMMIT_APPENDS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];
/// 512 B up to 64 MiB, by powers of four.
const GROUP_COMMIT_BYTES_BUCKETS: &[f64] = &[
    512.0,
    2048.0,
    8192.0,
    32768.0,
    131_072.0,
    524_288.0,
    2_097_152.0,
    8_388_608.0,
    33_554_432.0,
    67_108_864.0,
];
/// Stages of the produce → fetch path (ADR 0017): 5 µs (a hand-off on one core) up to 1 s,
/// about 1.5× apart so p99.9 is read within a bucket of that width.
const STAGE_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_02, 0.000_035, 0.000_05, 0.000_075, 0.0001, 0.000_15, 0.0002,
    0.0003, 0.0005, 0.000_75, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.1, 0.25, 1.0,
];
/// Histogram samples are folded into their buckets at least this often, scraped or not: often
/// enough that each fold is short.
const UPKEEP_EVERY: Duration = Duration::from_millis(500);

/// Installs the global recorder once per process and returns its handle. Handles created
/// through the facade before this call record nowhere, so it runs first in `serve`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("wharf_kafka_request_duration_seconds".into()),
            LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("wharf_metrics_upkeep_duration_seconds".into()),
            FDATASYNC_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("wharf_storage_fdatasync_duration_seconds".into()),
            FDATASYNC_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("wharf_storage_segment_roll_seconds".into()),
            ROLL_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("wharf_storage_segment_seal_seconds".into()),
            ROLL_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("wharf_storage_group_commit_appends".into()),
            GROUP_COMMIT_APPENDS_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("wharf_storage_group_commit_bytes".into()),
            GROUP_COMMIT_BYTES_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(wharf_storage::stage::PRODUCE_METRIC.into()),
            STAGE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(wharf_storage::stage::FETCH_METRIC.into()),
            STAGE_BUCKETS,
        )?
        .install_recorder()?;
    describe_recorded();
    // Stage stamps cost a clock read each: taken only when a recorder keeps them.
    wharf_storage::stage::enable();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Folds histogram samples into buckets now and then (the exporter's upkeep), so memory
/// stays bounded when nobody scrapes. One thread per process, started once, running until the
/// process exits. Not on the async workers: a fold takes time in proportion to the samples
/// recorded since the last one (every produce records about ten stage samples), and on a
/// tokio worker it held up every task queued there, once per interval (ADR 0017).
pub fn spawn_upkeep(handle: PrometheusHandle) {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("wharf-metrics".into())
        .spawn(move || {
            let took = metrics::histogram!("wharf_metrics_upkeep_duration_seconds");
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                let started = Instant::now();
                handle.run_upkeep();
                took.record(started.elapsed().as_secs_f64());
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the metrics upkeep thread; histogram samples are folded only when scraped");
    }
}

fn describe_recorded() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "wharf_topic_records_in_total",
        Unit::Count,
        "Records appended by producers, per topic."
    );
    describe_counter!(
        "wharf_topic_bytes_in_total",
        Unit::Bytes,
        "Record batch bytes appended by producers, per topic."
    );
    describe_counter!(
        "wharf_topic_records_out_total",
        Unit::Count,
        "Records returned to fetchers, per topic (whole batches, as stored)."
    );
    describe_counter!(
        "wharf_topic_bytes_out_total",
        Unit::Bytes,
        "Record batch bytes returned to fetchers, per topic."
    );
    describe_counter!(
        "wharf_kafka_requests_total",
        Unit::Count,
        "Kafka requests served, per API."
    );
    describe_counter!(
        "wharf_kafka_rejected_requests_total",
        Unit::Count,
        "Kafka requests refused before any handler ran, their connection closed, per reason \
         (malformed, oversized, unknown_api, unsupported_version)."
    );
    describe_counter!(
        "wharf_kafka_request_errors_total",
        Unit::Count,
        "Kafka requests that failed (undecodable, handler or encode failure), or whose \
         Produce/Fetch/ApiVersions answer carries an error code, per API."
    );
    describe_histogram!(
        "wharf_kafka_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's dispatch to its response being ready, per API (a Produce \
         includes waiting for its acks, a Fetch its long poll)."
    );
    describe_gauge!(
        "wharf_kafka_connections",
        Unit::Count,
        "Open Kafka client connections."
    );
    describe_gauge!(
        "wharf_amqp_connections",
        Unit::Count,
        "Open AMQP 0-9-1 client connections."
    );
    describe_histogram!(
        "wharf_metrics_upkeep_duration_seconds",
        Unit::Seconds,
        "Time the exporter's upkeep took to fold the histogram samples recorded since the last \
         one into their buckets (twice a second, on its own thread)."
    );
    describe_histogram!(
        "wharf_storage_group_commit_appends",
        Unit::Count,
        "Appends (a partition of a produce request) covered by one group commit, per shard."
    );
    describe_histogram!(
        "wharf_storage_group_commit_bytes",
        Unit::Bytes,
        "Bytes written by one group commit, per shard."
    );
    describe_histogram!(
        "wharf_storage_segment_roll_seconds",
        Unit::Seconds,
        "How long one segment roll held a shard's writer (the next file created, and the \
         rolled segment handed to the syncer to seal), per shard. No append is written meanwhile."
    );
    describe_histogram!(
        "wharf_storage_segment_seal_seconds",
        Unit::Seconds,
        "How long the syncer took to seal one rolled segment (its fdatasync, then its index \
         sorted and written), per shard. The writer writes the next segment meanwhile; acks \
         for it wait."
    );
    describe_histogram!(
        "wharf_storage_fdatasync_duration_seconds",
        Unit::Seconds,
        "Duration of one fdatasync of a shard's segment (an acks=all group's, a periodic flush, a seal), per shard."
    );
    describe_counter!(
        "wharf_kafka_throttle_time_ms_total",
        "Milliseconds clients were held back by their quota, per client id and quota."
    );
    describe_gauge!(
        "wharf_kafka_fetch_sessions",
        "Open Kafka fetch sessions (KIP-227)."
    );
    describe_counter!(
        "wharf_kafka_fetch_requests_total",
        "Fetch requests by session kind: none (sessionless full), full (opens a session), incremental."
    );
    describe_counter!(
        "wharf_kafka_fetch_request_partitions_total",
        "Partitions named in Fetch requests, by session kind: incremental fetches name only those that changed."
    );
    describe_gauge!(
        "wharf_storage_shard_poisoned",
        "1 once a failed fdatasync or write rollback poisoned the shard (no acks until restart)."
    );
    describe_counter!(
        "wharf_storage_compaction_segments_rewritten_total",
        "Sealed segments the cleaner rewrote (or deleted when nothing in them survived)."
    );
    describe_counter!(
        "wharf_storage_compaction_bytes_reclaimed_total",
        "Segment bytes the cleaner freed (cleanup.policy=compact)."
    );
    describe_counter!(
        "wharf_cluster_leader_changes_total",
        Unit::Count,
        "Times this node saw a shard group's leader become another node, per shard (the first \
         election counts)."
    );
    describe_counter!(
        "wharf_storage_sealed_index_loads_total",
        "Sealed segment indexes read from their index files (not found in the cache)."
    );
    describe_counter!(
        "wharf_storage_sealed_index_hits_total",
        "Sealed segment index lookups answered from the cache."
    );
    describe_gauge!(
        "wharf_storage_sealed_index_cache_bytes",
        Unit::Bytes,
        "Bytes of sealed segment indexes held in the cache (sealed_index_cache_bytes)."
    );
    describe_counter!(
        "wharf_storage_preallocated_bytes_total",
        Unit::Bytes,
        "Zeros written and synced ahead of a shard's writer in its active segment \
         (log_segment_preallocate_bytes), per shard."
    );
    describe_scheduled();
    describe_stages();
}

/// Stage stamps of an acks=all produce and the fetch that delivers it (ADR 0017).
fn describe_stages() {
    use metrics::describe_histogram;
    describe_histogram!(
        wharf_storage::stage::PRODUCE_METRIC,
        Unit::Seconds,
        "Stages of a produce, one sample per partition append (receive, response_write: per \
         request): receive = frame read to handed to the shard queue; queue = waiting for the \
         shard writer; write = the group commit's copy and write; fdatasync = its fdatasync; \
         publish = fdatasync (or write) to this append's index entry, high watermark and reply; \
         ack = the writer's reply to the produce task running; response_write = response ready \
         to written to the socket."
    );
    describe_histogram!(
        wharf_storage::stage::FETCH_METRIC,
        Unit::Seconds,
        "Stages of a fetch that delivers records: wake = the publish that woke a parked fetch \
         to the fetch running; read = a read that returned records, with its hop to the \
         blocking pool; response_write = response ready to written to the socket."
    );
}

/// The engine of delayed and half messages and the dedup window.
fn describe_scheduled() {
    use metrics::describe_counter;
    for (name, help) in [
        (
            "wharf_delay_scheduled_total",
            "Records of delay topics stored in __wharf_scheduled to wait for their due time.",
        ),
        (
            "wharf_delay_fired_total",
            "Records delivered by the engine to their target partition (due delayed records, \
             committed half records, immediate records of a diverted batch).",
        ),
        (
            "wharf_txn_half_prepared_total",
            "Half (prepared) records stored on transaction topics.",
        ),
        (
            "wharf_txn_half_committed_total",
            "Half records made visible by a commit.",
        ),
        (
            "wharf_txn_half_rolled_back_total",
            "Half records discarded by a rollback.",
        ),
        (
            "wharf_txn_half_checked_total",
            "Check-back records announced on wharf.txn-check.<group> topics.",
        ),
        (
            "wharf_txn_half_abandoned_total",
            "Half records moved to wharf.txn-abandoned after their last unanswered check.",
        ),
        (
            "wharf_dedup_duplicates_total",
            "Records not stored because their wharf-msg-id was stored within the dedup window.",
        ),
    ] {
        describe_counter!(name, Unit::Count, help);
    }
}

/// A scrape: the recorded metrics, then the gauges computed from `broker` (if it is open).
pub fn render(handle: &PrometheusHandle, broker: Option<&Broker>) -> String {
    let mut text = handle.render();
    if let Some(broker) = broker {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&render_state(broker));
    }
    text
}

/// Offsets and byte counts stay far below 2^53, where `f64` is exact.
#[allow(clippy::cast_precision_loss)]
fn sample(value: i64) -> f64 {
    value as f64
}

/// Gauges read from broker state, through a recorder that lives for this scrape only.
fn render_state(broker: &Broker) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_gauge!(
            "wharf_topic_disk_bytes",
            Unit::Bytes,
            "Bytes of the topic's retained record batches in the shard logs."
        );
        metrics::describe_gauge!(
            "wharf_group_partition_lag_records",
            Unit::Count,
            "Log end offset minus the group's committed offset, per group and partition."
        );
        metrics::describe_gauge!(
            "wharf_group_lag_records",
            Unit::Count,
            "Sum of the group's lag over its committed partitions."
        );
        for topic in broker.topics() {
            let bytes: u64 = topic.partitions.iter().map(|p| p.log.size_bytes()).sum();
            metrics::gauge!("wharf_topic_disk_bytes", "topic" => topic.name.clone())
                .set(sample(i64::try_from(bytes).unwrap_or(i64::MAX)));
        }
        for group in broker.groups().list_groups(&[]).unwrap_or_default() {
            let lags = lag::committed_lag(broker, &group.group_id);
            for l in &lags {
                if let Some(value) = l.lag() {
                    metrics::gauge!(
                        "wharf_group_partition_lag_records",
                        "group" => group.group_id.clone(),
                        "topic" => l.topic.clone(),
                        "partition" => l.partition.to_string()
                    )
                    .set(sample(value));
                }
            }
            metrics::gauge!("wharf_group_lag_records", "group" => group.group_id.clone())
                .set(sample(lag::total(&lags)));
        }
        render_share(broker);
    });
    recorder.handle().render()
}

/// Share-group counters per group: the sums of the cursors' persisted totals (so they
/// survive restarts), and the records locked and not yet settled now.
fn render_share(broker: &Broker) {
    use metrics::{counter, describe_counter, describe_gauge, gauge};
    describe_counter!(
        "wharf_share_records_acquired_total",
        Unit::Count,
        "Records handed to share consumers under a lock (every delivery counts)."
    );
    describe_counter!(
        "wharf_share_records_acknowledged_total",
        Unit::Count,
        "Share-group acknowledgements per type (accept, release, reject)."
    );
    describe_counter!(
        "wharf_share_records_redelivered_total",
        Unit::Count,
        "Deliveries of records delivered before (delivery count above 1)."
    );
    describe_counter!(
        "wharf_share_records_archived_total",
        Unit::Count,
        "Records archived: rejected, or released or expired at the delivery count limit."
    );
    describe_counter!(
        "wharf_share_records_dead_lettered_total",
        Unit::Count,
        "Archived records written to the group's dead-letter topic."
    );
    describe_counter!(
        "wharf_share_lock_expiries_total",
        Unit::Count,
        "Acquisition locks that expired before an acknowledgement."
    );
    describe_gauge!(
        "wharf_share_records_locked",
        Unit::Count,
        "Records locked to share consumers now."
    );
    describe_gauge!(
        "wharf_share_lag_records",
        Unit::Count,
        "High watermark minus the share-partition start offset, summed over the group."
    );
    for group in broker.share_groups() {
        let d = broker.share_describe(&group);
        let sum = |f: fn(&wharf_broker::share::SharePartitionState) -> u64| -> u64 {
            d.partitions.iter().map(f).sum()
        };
        let g = || group.clone();
        counter!("wharf_share_records_acquired_total", "group" => g())
            .absolute(sum(|p| p.view.totals.acquired));
        for (kind, total) in [
            ("accept", sum(|p| p.view.totals.accepted)),
            ("release", sum(|p| p.view.totals.released)),
            ("reject", sum(|p| p.view.totals.rejected)),
        ] {
            counter!("wharf_share_records_acknowledged_total", "group" => g(), "type" => kind)
                .absolute(total);
        }
        counter!("wharf_share_records_redelivered_total", "group" => g())
            .absolute(sum(|p| p.view.totals.redelivered));
        counter!("wharf_share_records_archived_total", "group" => g())
            .absolute(sum(|p| p.view.totals.archived));
        counter!("wharf_share_records_dead_lettered_total", "group" => g())
            .absolute(sum(|p| p.view.totals.dead_lettered));
        counter!("wharf_share_lock_expiries_total", "group" => g())
            .absolute(sum(|p| p.view.totals.lock_expiries));
        gauge!("wharf_share_records_locked", "group" => g()).set(sample(
            i64::try_from(sum(|p| p.view.acquired as u64)).unwrap_or(i64::MAX),
        ));
        gauge!("wharf_share_lag_records", "group" => g())
            .set(sample(d.partitions.iter().map(|p| p.lag).sum()));
    }
}

/// Per-queue AMQP metrics read from queue state at scrape time (a deleted queue disappears).
pub fn render_amqp(registry: &wharf_amqp::Registry) -> String {
    use std::sync::atomic::Ordering;
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        let counters = [
            ("wharf_amqp_queue_published_total", "Messages stored in the queue."),
            ("wharf_amqp_queue_delivered_total", "Deliveries to consumers and basic.get, redeliveries included."),
            ("wharf_amqp_queue_acked_total", "Deliveries acknowledged by consumers."),
            ("wharf_amqp_queue_redelivered_total", "Deliveries of messages delivered before (redelivered=true)."),
            ("wharf_amqp_queue_dead_lettered_total", "Messages dead-lettered (rejected, expired, over the delivery limit or max length) or dropped."),
        ];
        for (name, help) in counters {
            metrics::describe_counter!(name, Unit::Count, help);
        }
        metrics::describe_gauge!(
            "wharf_amqp_queue_ready",
            Unit::Count,
            "Messages ready for delivery in the queue."
        );
        metrics::describe_gauge!(
            "wharf_amqp_queue_unacked",
            Unit::Count,
            "Messages delivered and not yet acknowledged."
        );
        for q in registry.list_queues() {
            if q.is_kafka() {
                continue;
            }
            let label = q.name.clone();
            metrics::gauge!("wharf_amqp_queue_ready", "queue" => label.clone())
                .set(sample(i64::try_from(q.ready()).unwrap_or(i64::MAX)));
            metrics::gauge!("wharf_amqp_queue_unacked", "queue" => label.clone())
                .set(sample(i64::try_from(q.unacked()).unwrap_or(i64::MAX)));
            let c = &q.counters;
            for (name, value) in [
                ("wharf_amqp_queue_published_total", &c.published),
                ("wharf_amqp_queue_delivered_total", &c.delivered),
                ("wharf_amqp_queue_acked_total", &c.acked),
                ("wharf_amqp_queue_redelivered_total", &c.redelivered),
                ("wharf_amqp_queue_dead_lettered_total", &c.dead_lettered),
            ] {
                metrics::counter!(name, "queue" => label.clone())
                    .absolute(value.load(Ordering::Relaxed));
            }
        }
    });
    recorder.handle().render()
}

/// Cluster gauges read from the shard groups at scrape time: replication lag per follower of
/// each shard this node leads, and partitions under-replicated on this node as their leader.
pub fn render_cluster(broker: &Broker, cluster: &crate::cluster::ClusterState) -> String {
    use wharf_broker::cluster::ClusterView;
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_gauge!(
            "wharf_cluster_replication_lag_entries",
            Unit::Count,
            "Raft entries of this leader's shard log a follower does not hold yet, per shard \
             and follower (only on the shard's leader)."
        );
        metrics::describe_gauge!(
            "wharf_under_replicated_partitions",
            Unit::Count,
            "Partitions this node leads whose shard has a replica out of the ISR (not heard by \
             the leader lately)."
        );
        let status = cluster.status();
        let mut under_replicated_shards = Vec::new();
        for shard in &status.shards {
            if !shard.is_leader() {
                continue;
            }
            for follower in &shard.followers {
                metrics::gauge!(
                    "wharf_cluster_replication_lag_entries",
                    "shard" => shard.shard.to_string(),
                    "follower" => follower.node_id.to_string()
                )
                .set(sample(
                    i64::try_from(follower.lag_entries).unwrap_or(i64::MAX),
                ));
            }
            let role = cluster.shard(shard.shard);
            if role.isr.len() < role.replicas.len() {
                under_replicated_shards.push(shard.shard);
            }
        }
        let under: usize = broker
            .topics()
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| under_replicated_shards.contains(&p.log.shard_id()))
            .count();
        metrics::gauge!("wharf_under_replicated_partitions")
            .set(sample(i64::try_from(under).unwrap_or(i64::MAX)));
    });
    recorder.handle().render()
}

//! librdkafka clients for tests.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

fn config(addr: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr);
    c.set("broker.address.family", "v4");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

pub fn producer(addr: &str, extra: &[(&str, &str)]) -> anyhow::Result<FutureProducer> {
    let mut c = config(addr, &[("message.timeout.ms", "30000"), ("linger.ms", "5")]);
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().context("creating producer")
}

/// A consumer without a group (use `assign`).
pub fn base_consumer(addr: &str, extra: &[(&str, &str)]) -> anyhow::Result<BaseConsumer> {
    let mut c = config(
        addr,
        &[
            ("group.id", "wharf-testkit"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ],
    );
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().context("creating consumer")
}

/// A consumer in `group` that commits only when told (`enable.auto.commit=false`), starts
/// from the earliest offset without a commit, and has a 6 s session so eviction is quick.
/// `extra` overrides (e.g. `partition.assignment.strategy`, `group.instance.id`).
pub fn group_consumer<C: ConsumerContext + 'static>(
    addr: &str,
    group: &str,
    extra: &[(&str, &str)],
    context: C,
) -> anyhow::Result<BaseConsumer<C>> {
    let mut c = config(
        addr,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ],
    );
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(context)
        .context("creating group consumer")
}

pub fn admin(addr: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    config(addr, &[]).create().context("creating admin client")
}

/// Creates a topic through CreateTopics, failing on any error.
pub async fn create_topic(
    addr: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin = admin(addr)?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// (log start, high watermark) of every partition, through ListOffsets.
pub fn watermarks(
    addr: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<HashMap<i32, (i64, i64)>> {
    let c = base_consumer(addr, &[])?;
    let mut out = HashMap::new();
    for p in 0..partitions {
        out.insert(p, c.fetch_watermarks(topic, p, Duration::from_secs(10))?);
    }
    Ok(out)
}

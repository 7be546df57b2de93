//! Topic administration through librdkafka's AdminClient: create (configs, validate-only),
//! describe and alter configs, add partitions, delete; errors come back as Kafka codes.

use std::time::Duration;

use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::types::RDKafkaErrorCode;

use crate::start_broker;

fn topic_config(results: &[rdkafka::admin::ConfigResourceResult], key: &str) -> Option<String> {
    let r = results[0].as_ref().unwrap();
    r.get(key).and_then(|e| e.value.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_client_manages_topics() {
    let (_dir, broker) = start_broker(&[("auto_create_topics", "false")]);
    let addr = broker.addr();
    let admin = wharf_testkit::admin(&addr).unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));

    // validate_only creates nothing.
    let t = NewTopic::new("audit", 4, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
    admin
        .create_topics([&t], &AdminOptions::new().validate_only(true))
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    let md = wharf_testkit::base_consumer(&addr, &[]).unwrap();
    let a = addr.clone();
    let exists = move |name: &'static str| {
        let c = wharf_testkit::base_consumer(&a, &[]).unwrap();
        let m =
            rdkafka::consumer::Consumer::fetch_metadata(&c, None, Duration::from_secs(10)).unwrap();
        m.topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    drop(md);
    assert_eq!(exists("audit"), None);

    admin.create_topics([&t], &opts).await.unwrap()[0]
        .as_ref()
        .unwrap();
    assert_eq!(exists("audit"), Some(4));
    let again = admin.create_topics([&t], &opts).await.unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );

    // Invalid configs, partitions and names are refused with their codes.
    let bad = NewTopic::new("bad", 1, TopicReplication::Fixed(1)).set("cleanup.policy", "archive");
    assert_eq!(
        admin.create_topics([&bad], &opts).await.unwrap()[0]
            .as_ref()
            .unwrap_err()
            .1,
        RDKafkaErrorCode::InvalidConfig
    );
    let bad = NewTopic::new("bad", 1, TopicReplication::Fixed(3));
    assert_eq!(
        admin.create_topics([&bad], &opts).await.unwrap()[0]
            .as_ref()
            .unwrap_err()
            .1,
        RDKafkaErrorCode::InvalidReplicationFactor
    );
    let bad = NewTopic::new("bad name!", 1, TopicReplication::Fixed(1));
    assert_eq!(
        admin.create_topics([&bad], &opts).await.unwrap()[0]
            .as_ref()
            .unwrap_err()
            .1,
        RDKafkaErrorCode::InvalidTopic
    );

    // Describe, alter, describe.
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic("audit")], &opts)
        .await
        .unwrap();
    assert_eq!(
        topic_config(&res, "retention.ms").as_deref(),
        Some("3600000")
    );
    assert_eq!(
        topic_config(&res, "cleanup.policy").as_deref(),
        Some("delete")
    );
    let alter = AlterConfig::new(ResourceSpecifier::Topic("audit"))
        .set("retention.ms", "7200000")
        .set("max.message.bytes", "2048");
    admin.alter_configs([&alter], &opts).await.unwrap()[0]
        .as_ref()
        .unwrap();
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic("audit")], &opts)
        .await
        .unwrap();
    assert_eq!(
        topic_config(&res, "retention.ms").as_deref(),
        Some("7200000")
    );
    assert_eq!(
        topic_config(&res, "max.message.bytes").as_deref(),
        Some("2048")
    );
    // An invalid value changes nothing (rdkafka's AlterConfigs result drops per-resource
    // errors, so the outcome is checked through DescribeConfigs).
    let alter = AlterConfig::new(ResourceSpecifier::Topic("audit")).set("retention.ms", "soon");
    admin.alter_configs([&alter], &opts).await.unwrap();
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic("audit")], &opts)
        .await
        .unwrap();
    assert_eq!(
        topic_config(&res, "retention.ms").as_deref(),
        Some("7200000")
    );
    assert_eq!(
        topic_config(&res, "max.message.bytes").as_deref(),
        Some("2048")
    );

    // Partitions grow, never shrink.
    admin
        .create_partitions([&NewPartitions::new("audit", 6)], &opts)
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    assert_eq!(exists("audit"), Some(6));
    let shrink = admin
        .create_partitions([&NewPartitions::new("audit", 2)], &opts)
        .await
        .unwrap();
    assert_eq!(
        shrink[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidPartitions
    );

    // Delete; a second delete is UNKNOWN_TOPIC_OR_PARTITION.
    admin.delete_topics(&["audit"], &opts).await.unwrap()[0]
        .as_ref()
        .unwrap();
    assert_eq!(exists("audit"), None);
    let again = admin.delete_topics(&["audit"], &opts).await.unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
}

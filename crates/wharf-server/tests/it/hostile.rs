//! Bad input fails alone: oversized messages, garbage frames, unknown APIs, unsupported
//! versions. The broker keeps serving other clients.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use crate::start_broker;

/// Sends `bytes` and reads until the broker closes the connection; returns what was read.
fn send_raw(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn api_versions_frame(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

async fn produce_works(addr: &str, topic: &str) {
    let p = wharf_testkit::producer(addr, &[("acks", "all")]).unwrap();
    p.send(
        FutureRecord::to(topic).key("k").payload("still serving"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn message_too_large_is_refused_and_broker_serves_on() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "small", 1, &[("max.message.bytes", "1048576")])
        .await
        .unwrap();
    let p = wharf_testkit::producer(
        &addr,
        &[
            ("acks", "all"),
            ("message.max.bytes", "4000000"),
            ("compression.type", "none"),
        ],
    )
    .unwrap();
    let big = vec![7u8; 2 * 1024 * 1024];
    let err = p
        .send(
            FutureRecord::to("small").key("k").payload(&big),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err()
        .0;
    assert_eq!(
        err,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    produce_works(&addr, "small").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_unknown_requests_close_only_their_connection() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "t", 1, &[])
        .await
        .unwrap();
    let keep = wharf_testkit::producer(&addr, &[("acks", "all")]).unwrap();
    keep.send(
        FutureRecord::<str, str>::to("t").payload("before"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    // Garbage: a huge size, a negative size, a short frame, random bytes, unknown api key.
    assert!(send_raw(&addr, &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]).is_empty());
    assert!(send_raw(&addr, &(-5i32).to_be_bytes()).is_empty());
    assert!(send_raw(&addr, &[0, 0, 0, 2, 0, 0]).is_empty());
    assert!(send_raw(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_empty());
    let mut unknown = api_versions_frame(0, 1);
    unknown[4..6].copy_from_slice(&999i16.to_be_bytes());
    assert!(send_raw(&addr, &unknown).is_empty());
    // A Produce v0 (message format v0/v1) is not offered: connection closed, no answer.
    let mut old = api_versions_frame(0, 2);
    old[4..6].copy_from_slice(&0i16.to_be_bytes());
    assert!(send_raw(&addr, &old).is_empty());

    // ApiVersions at a version newer than known: a v0 answer with UNSUPPORTED_VERSION (35).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&api_versions_frame(99, 42)).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(i32::from_be_bytes(body[0..4].try_into().unwrap()), 42);
    assert_eq!(i16::from_be_bytes(body[4..6].try_into().unwrap()), 35);

    // The established client and new ones are unaffected, and the broker is alive.
    keep.send(
        FutureRecord::<str, str>::to("t").payload("after"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    produce_works(&addr, "t").await;
    assert!(broker.is_running());
    assert!(
        broker.log().contains("closing connection"),
        "bad input is logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_request_does_not_block_others_and_idle_times_out() {
    let (_dir, broker) = start_broker(&[("connection_idle_timeout_ms", "1000")]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "t", 1, &[])
        .await
        .unwrap();
    // Announce 100 bytes, send 10, stall.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(&100i32.to_be_bytes()).unwrap();
    stalled.write_all(&[0u8; 10]).unwrap();
    produce_works(&addr, "t").await;
    // The stalled connection is closed by the broker.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        stalled.read(&mut buf).unwrap(),
        0,
        "stalled connection closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_abandoned_connections_and_the_connection_limit() {
    let (_dir, broker) =
        start_broker(&[("max_connections", "2200"), ("auto_create_topics", "false")]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "t", 1, &[])
        .await
        .unwrap();
    // 2,000 connections opened and abandoned: half silent, half mid-request.
    let mut conns = Vec::new();
    for i in 0..2_000 {
        let mut s = TcpStream::connect(&addr).unwrap();
        if i % 2 == 1 {
            s.write_all(&64i32.to_be_bytes()).unwrap();
            s.write_all(&[0, 3, 0, 1]).unwrap();
        }
        conns.push(s);
    }
    // The broker serves a real client while they hang there...
    produce_works(&addr, "t").await;
    // ...and beyond the limit a connection is closed at once.
    let mut extra: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    // Give the broker a moment to accept (and drop) them, then look without blocking: a
    // refused connection reads end-of-stream, an accepted one would block.
    let mut refused = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        refused = 0;
        for s in &mut extra {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            if matches!(s.read(&mut b), Ok(0)) {
                refused += 1;
            }
        }
        if refused >= 100 {
            break;
        }
    }
    assert!(
        refused >= 100,
        "connections past max_connections are closed ({refused} of 300)"
    );
    drop(extra);
    drop(conns);
    // Once they are gone, new clients are served.
    produce_works(&addr, "t").await;
    assert!(broker.log().contains("too many connections"));
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_to_a_missing_topic_is_refused_per_partition() {
    let (_dir, broker) = start_broker(&[("auto_create_topics", "false")]);
    let addr = broker.addr();
    let p =
        wharf_testkit::producer(&addr, &[("acks", "all"), ("message.timeout.ms", "3000")]).unwrap();
    let err = p
        .send(
            FutureRecord::<str, str>::to("nowhere").payload("x"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err()
        .0;
    assert!(
        matches!(
            err,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::MessageTimedOut
            )
        ),
        "{err:?}"
    );
    wharf_testkit::create_topic(&addr, "somewhere", 1, &[])
        .await
        .unwrap();
    produce_works(&addr, "somewhere").await;
}

/// A request header (api key, version, correlation id, null client id) and `body`, framed.
fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut inner = Vec::new();
    inner.extend_from_slice(&api_key.to_be_bytes());
    inner.extend_from_slice(&version.to_be_bytes());
    inner.extend_from_slice(&7i32.to_be_bytes());
    inner.extend_from_slice(&(-1i16).to_be_bytes());
    inner.extend_from_slice(body);
    let mut out = (inner.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&inner);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_array_count_closes_only_that_connection() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "t", 1, &[])
        .await
        .unwrap();
    // Metadata v0 claiming 2^31-1 topics in a 4-byte body: once this aborted the process
    // (the codec allocated for the claimed count; see ADR 0006).
    assert!(send_raw(&addr, &frame(3, 0, &i32::MAX.to_be_bytes())).is_empty());
    // Fetch v4: replica, max wait, min bytes, max bytes, isolation, then 2^31-1 topics.
    let mut fetch = Vec::new();
    fetch.extend_from_slice(&(-1i32).to_be_bytes());
    fetch.extend_from_slice(&100i32.to_be_bytes());
    fetch.extend_from_slice(&1i32.to_be_bytes());
    fetch.extend_from_slice(&1_000_000i32.to_be_bytes());
    fetch.push(0);
    fetch.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(send_raw(&addr, &frame(1, 4, &fetch)).is_empty());
    // A truncated but otherwise plausible request is closed too, not left hanging.
    assert!(send_raw(&addr, &frame(3, 0, &[0, 0, 0, 2, 0, 1])).is_empty());
    produce_works(&addr, "t").await;
    assert!(broker.is_running());
}

/// Kafka's error code for a batch that fails validation.
const CORRUPT_MESSAGE: i16 = 2;

/// Produce v7: the newest version before flexible headers, so `frame`'s v1 header fits.
const PRODUCE_V7: i16 = 7;

/// A batch from wharf_record's builder holding `records` records, its records count then set to
/// `count` (when given) with the CRC recomputed, so the count is the only thing wrong. The
/// count is at byte 57; the CRC at 17 covers byte 21 onwards.
fn batch_claiming(records: usize, count: Option<i32>) -> Bytes {
    let mut b = wharf_record::BatchBuilder::new(1_000);
    for i in 0..records {
        b.push(None, Some(format!("v{i}").as_bytes()), &[], 1_000);
    }
    let mut bytes = b.build();
    if let Some(count) = count {
        bytes[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    Bytes::from(bytes)
}

/// Sends one Produce v7 with acks=all and returns each partition's error code.
fn produce_raw(addr: &str, topic: &str, partitions: Vec<(i32, Bytes)>) -> BTreeMap<i32, i16> {
    let partition_data = partitions
        .into_iter()
        .map(|(index, records)| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(records))
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(partition_data)]);
    let mut body = BytesMut::new();
    request.encode(&mut body, PRODUCE_V7).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&frame(0, PRODUCE_V7, &body)).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut response).unwrap();
    assert_eq!(i32::from_be_bytes(response[0..4].try_into().unwrap()), 7);
    let mut response = Bytes::from(response).slice(4..);
    let response = ProduceResponse::decode(&mut response, PRODUCE_V7).unwrap();
    response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| (p.index, p.error_code))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_record_count_disagrees_is_corrupt_and_fails_alone() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "counts", 3, &[])
        .await
        .unwrap();
    // One request: a good batch, a batch claiming 0 records, and one claiming
    // last_offset_delta + 2 (3 records, last_offset_delta 2, count 4).
    let codes = produce_raw(
        &addr,
        "counts",
        vec![
            (0, batch_claiming(2, None)),
            (1, batch_claiming(1, Some(0))),
            (2, batch_claiming(3, Some(4))),
        ],
    );
    assert_eq!(
        codes,
        BTreeMap::from([(0, 0), (1, CORRUPT_MESSAGE), (2, CORRUPT_MESSAGE)])
    );
    // The good batch is stored, the refused ones are not.
    let a = addr.clone();
    let ends = tokio::task::spawn_blocking(move || wharf_testkit::watermarks(&a, "counts", 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ends.get(&0), Some(&(0, 2)), "{ends:?}");
    assert_eq!(ends.get(&1), Some(&(0, 0)), "{ends:?}");
    assert_eq!(ends.get(&2), Some(&(0, 0)), "{ends:?}");
    produce_works(&addr, "counts").await;
    assert!(broker.is_running());
}

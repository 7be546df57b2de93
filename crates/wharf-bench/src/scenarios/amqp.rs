//! The AMQP scenarios (opt-in: `--scenario amqp-publish-confirm --scenario
//! amqp-consume-ack --amqp HOST:PORT`, with --spawn also `--broker-set amqp_listen=...`):
//! one connection publishes 1 KiB persistent messages to a durable queue with publisher
//! confirms (at most 1,024 unconfirmed) for the run's duration; then one connection consumes
//! them with manual acks (prefetch 1,000, an ack with `multiple` every 100 deliveries).
//! Then `amqp-e2e-latency`: a publisher paced at 5,000 msg/s (1 KiB, confirms) and a
//! consumer with manual acks on another connection; latency = receive time − intended send
//! time (so a stalled publisher cannot hide delay), p50 and p99 over the run.

use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::json;

use super::{repeat, Context};
use crate::amqp::AmqpClient;
use crate::report::{Figure, ScenarioReport};

const BODY: usize = 1024;
const WINDOW: u64 = 1024;
const PREFETCH: u16 = 1000;
const ACK_EVERY: u64 = 100;

const E2E_RATE: u64 = 5_000;

struct Run {
    published_per_sec: f64,
    consumed_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// One paced run: (p50, p99) in milliseconds.
fn e2e(ctx: &Context<'_>, amqp: &str, queue: &str) -> anyhow::Result<(f64, f64)> {
    let mut publisher = AmqpClient::connect(amqp)?;
    publisher.declare_queue(queue, true)?;
    publisher.confirm_select()?;
    let total = E2E_RATE * ctx.args.duration;
    let origin = Instant::now();
    let consumer_amqp = amqp.to_string();
    let consumer_queue = queue.to_string();
    let consumer = std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
        let mut client = AmqpClient::connect(&consumer_amqp)?;
        client.qos_consume(&consumer_queue, PREFETCH)?;
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut delivered = 0u64;
        let mut last_tag = 0u64;
        while delivered < total {
            match client.recv()? {
                AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) => {
                    last_tag = d.delivery_tag;
                }
                AMQPFrame::Body(_, body) => {
                    let intended = u64::from_le_bytes(
                        body.get(..8)
                            .and_then(|b| b.try_into().ok())
                            .unwrap_or([0; 8]),
                    );
                    let now = origin.elapsed().as_micros() as u64;
                    histogram.saturating_record(now.saturating_sub(intended).max(1));
                    delivered += 1;
                    if delivered % ACK_EVERY == 0 || delivered == total {
                        client.ack(last_tag, true)?;
                        client.flush()?;
                    }
                }
                _ => {}
            }
        }
        Ok(histogram)
    });
    let mut body = vec![b'x'; BODY];
    let (mut sent, mut confirmed) = (0u64, 0u64);
    while sent < total || confirmed < sent {
        let due = Duration::from_micros(sent * 1_000_000 / E2E_RATE);
        if sent < total && origin.elapsed() >= due {
            body[..8].copy_from_slice(&(due.as_micros() as u64).to_le_bytes());
            publisher.publish(queue, &body)?;
            publisher.flush()?;
            sent += 1;
            continue;
        }
        if confirmed < sent {
            // Confirms arrive on their own pace; read one if the next send is not due.
            match publisher.recv()? {
                AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                    confirmed = confirmed.max(a.delivery_tag);
                }
                other => bail!("unexpected frame while publishing: {other:?}"),
            }
        } else {
            std::thread::sleep(due.saturating_sub(origin.elapsed()));
        }
    }
    let histogram = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    publisher.delete_queue(queue)?;
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok((
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
    ))
}

fn publish(ctx: &Context<'_>, amqp: &str, queue: &str) -> anyhow::Result<(u64, f64)> {
    let mut client = AmqpClient::connect(amqp)?;
    client.declare_queue(queue, true)?;
    client.confirm_select()?;
    let body = vec![b'x'; BODY];
    let (mut sent, mut confirmed) = (0u64, 0u64);
    let started = Instant::now();
    let until = started + ctx.duration();
    while Instant::now() < until || confirmed < sent {
        while sent - confirmed < WINDOW && Instant::now() < until {
            client.publish(queue, &body)?;
            sent += 1;
            if sent % 64 == 0 {
                client.flush()?;
            }
        }
        client.flush()?;
        match client.recv()? {
            AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                confirmed = confirmed.max(a.delivery_tag);
            }
            AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Nack(n))) => {
                bail!("publish {} was nacked", n.delivery_tag)
            }
            other => bail!("unexpected frame while publishing: {other:?}"),
        }
    }
    Ok((
        confirmed,
        confirmed as f64 / started.elapsed().as_secs_f64(),
    ))
}

fn consume(amqp: &str, queue: &str, expected: u64) -> anyhow::Result<f64> {
    let mut client = AmqpClient::connect(amqp)?;
    client.qos_consume(queue, PREFETCH)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut delivered = 0u64;
    while delivered < expected {
        if Instant::now() > deadline {
            bail!("consumed {delivered} of {expected} within 600 s");
        }
        if let AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) =
            client.recv()?
        {
            delivered += 1;
            if delivered % ACK_EVERY == 0 || delivered == expected {
                client.ack(d.delivery_tag, true)?;
                client.flush()?;
            }
        }
    }
    let rate = delivered as f64 / started.elapsed().as_secs_f64();
    client.delete_queue(queue)?;
    Ok(rate)
}

/// Both AMQP scenarios of one pass: publish with confirms, then consume with acks.
pub fn publish_and_consume(ctx: &mut Context<'_>) -> Vec<ScenarioReport> {
    let config = json!({ "amqp_client": "wharf-bench (amq-protocol frames; the client column names the Kafka pass it ran in)", "body_bytes": BODY, "confirm_window": WINDOW, "prefetch": PREFETCH, "ack_every": ACK_EVERY, "durable": true, "seconds": ctx.args.duration });
    let Some(amqp) = ctx.args.amqp.clone() else {
        return vec![ScenarioReport::skipped(
            "amqp-publish-confirm",
            config,
            "no --amqp address",
        )];
    };
    let runs = repeat(ctx, |ctx, index| {
        let queue = format!("bench-{}-amqp-r{index}", ctx.run_id);
        let (published, published_per_sec) = publish(ctx, &amqp, &queue)?;
        let consumed_per_sec = consume(&amqp, &queue, published)?;
        let (p50_ms, p99_ms) = e2e(ctx, &amqp, &format!("{queue}-e2e"))?;
        Ok(Run {
            published_per_sec,
            consumed_per_sec,
            p50_ms,
            p99_ms,
        })
    });
    match runs {
        Err(error) => vec![ScenarioReport::failed(
            "amqp-publish-confirm",
            config,
            &error,
        )],
        Ok(runs) => {
            let publish: Vec<f64> = runs.iter().map(|r| r.published_per_sec).collect();
            let mb: Vec<f64> = publish.iter().map(|m| m * BODY as f64 / 1e6).collect();
            let consume: Vec<f64> = runs.iter().map(|r| r.consumed_per_sec).collect();
            vec![
                ScenarioReport::new(
                    "amqp-publish-confirm",
                    vec![
                        Figure::new("msg/s", publish, None),
                        Figure::new("MB/s", mb, None),
                    ],
                    config.clone(),
                    Vec::new(),
                ),
                ScenarioReport::new(
                    "amqp-consume-ack",
                    vec![Figure::new("msg/s", consume, None)],
                    config.clone(),
                    Vec::new(),
                ),
                ScenarioReport::new(
                    "amqp-e2e-latency",
                    vec![
                        Figure::new("p50 ms", runs.iter().map(|r| r.p50_ms).collect(), None),
                        Figure::new("p99 ms", runs.iter().map(|r| r.p99_ms).collect(), None),
                    ],
                    json!({ "rate_per_sec": E2E_RATE, "body_bytes": BODY, "confirms": true, "manual_acks": true, "latency": "receive - intended send time" }),
                    Vec::new(),
                ),
            ]
        }
    }
}

//! The AMQP scenarios (opt-in: `--scenario amqp-publish-confirm --scenario
//! amqp-consume-ack --amqp HOST:PORT`, with --spawn also `--broker-set amqp_listen=...`):
//! one connection publishes 1 KiB persistent messages to a durable queue with publisher
//! confirms (at most 1,024 unconfirmed) for the run's duration; then one connection consumes
//! them with manual acks (prefetch 1,000, an ack with `multiple` every 100 deliveries).

use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use anyhow::bail;
use serde_json::json;

use super::{repeat, Context};
use crate::amqp::AmqpClient;
use crate::report::{Figure, ScenarioReport};

const BODY: usize = 1024;
const WINDOW: u64 = 1024;
const PREFETCH: u16 = 1000;
const ACK_EVERY: u64 = 100;

struct Run {
    published_per_sec: f64,
    consumed_per_sec: f64,
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
    let config = json!({ "body_bytes": BODY, "confirm_window": WINDOW, "prefetch": PREFETCH, "ack_every": ACK_EVERY, "durable": true, "seconds": ctx.args.duration });
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
        Ok(Run {
            published_per_sec,
            consumed_per_sec,
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
                    config,
                    Vec::new(),
                ),
            ]
        }
    }
}

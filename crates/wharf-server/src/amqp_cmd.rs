//! The AMQP door's state as JSON (`/v1/amqp/{exchanges,queues,bindings,consumers}`) and
//! `wharf amqp list ...`, which reads that JSON from the admin listener and prints a table
//! like `rabbitmqctl list_*`.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::group_cmd::format_table;

#[derive(clap::Subcommand, Debug)]
pub enum AmqpCommand {
    /// Lists exchanges, queues, bindings or consumers.
    List {
        #[arg(value_parser = ["exchanges", "queues", "bindings", "consumers"])]
        what: String,
    },
}

/// The JSON of one view; `None` for an unknown one.
pub fn view(registry: &wharf_amqp::Registry, what: &str) -> Option<Value> {
    Some(match what {
        "exchanges" => Value::Array(
            registry
                .list_exchanges()
                .into_iter()
                .map(|e| {
                    json!({
                        "name": e.name, "type": e.kind.as_str(), "durable": e.durable,
                        "auto_delete": e.auto_delete, "internal": e.internal,
                    })
                })
                .collect(),
        ),
        "bindings" => Value::Array(
            registry
                .list_bindings()
                .into_iter()
                .map(|b| {
                    json!({
                        "source": b.source, "destination": b.queue,
                        "routing_key": b.routing_key, "arguments": b.arguments,
                    })
                })
                .collect(),
        ),
        "queues" => Value::Array(
            registry
                .list_queues()
                .into_iter()
                .map(|q| {
                    let c = &q.counters;
                    json!({
                        "name": q.name, "durable": q.durable, "auto_delete": q.auto_delete,
                        "exclusive": q.exclusive_owner.is_some(),
                        "topic": q.topic, "type": if q.is_kafka() { "kafka" } else { "classic" },
                        "messages_ready": q.ready(), "messages_unacknowledged": q.unacked(),
                        "consumers": q.consumer_count(),
                        "published": c.published.load(Ordering::Relaxed),
                        "delivered": c.delivered.load(Ordering::Relaxed),
                        "acked": c.acked.load(Ordering::Relaxed),
                        "redelivered": c.redelivered.load(Ordering::Relaxed),
                        "dead_lettered": c.dead_lettered.load(Ordering::Relaxed),
                    })
                })
                .collect(),
        ),
        "consumers" => Value::Array(
            registry
                .list_queues()
                .into_iter()
                .flat_map(|q| {
                    q.consumer_tags()
                        .into_iter()
                        .map(move |(tag, channel, ack_required, prefetch)| {
                            json!({
                                "queue": q.name, "consumer_tag": tag, "channel": channel,
                                "ack_required": ack_required, "prefetch_count": prefetch,
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
        ),
        _ => return None,
    })
}

/// The columns of `wharf amqp list <what>` and its rows for a view's JSON.
pub fn table(what: &str, value: &Value) -> (&'static [&'static str], Vec<Vec<String>>) {
    let columns: &[&str] = match what {
        "exchanges" => &["name", "type", "durable", "auto_delete", "internal"],
        "bindings" => &["source", "destination", "routing_key"],
        "queues" => &[
            "name",
            "type",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "published",
            "delivered",
            "acked",
            "redelivered",
            "dead_lettered",
        ],
        _ => &[
            "queue",
            "consumer_tag",
            "channel",
            "ack_required",
            "prefetch_count",
        ],
    };
    let mut rows = Vec::new();
    for item in value.as_array().into_iter().flatten() {
        rows.push(
            columns
                .iter()
                .map(|c| match &item[*c] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    (columns, rows)
}

/// GET `path` from the admin listener at `admin`; the JSON body.
pub(crate) async fn get(admin: &str, path: &str) -> anyhow::Result<Value> {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the admin listener {admin}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{path}: {} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        );
    }
    Ok(serde_json::from_str(body.trim())?)
}

pub async fn run(admin: &str, cmd: AmqpCommand) -> anyhow::Result<()> {
    match cmd {
        AmqpCommand::List { what } => {
            let value = get(admin, &format!("/v1/amqp/{what}")).await?;
            let (columns, rows) = table(&what, &value);
            print!("{}", format_table(columns, &rows));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_rows_have_the_counters() {
        let value = json!([{ "name": "q1", "type": "classic", "messages_ready": 3,
            "messages_unacknowledged": 1, "consumers": 2, "published": 4, "delivered": 1,
            "acked": 0, "redelivered": 0, "dead_lettered": 0 }]);
        let (columns, rows) = table("queues", &value);
        assert_eq!(columns[2], "messages_ready");
        assert_eq!(rows[0][0], "q1");
        assert_eq!(rows[0][2], "3");
        assert_eq!(rows[0][3], "1");
    }
}

//! `wharf quota set|remove|describe`: client quotas over the Kafka protocol
//! (AlterClientQuotas, DescribeClientQuotas) against a running broker, as `kafka-configs.sh
//! --entity-type clients|users` does. The table is built by a pure function.

use anyhow::bail;
use wharf_kafka::kafka_protocol::messages::alter_client_quotas_request::{
    EntityData, EntryData, OpData,
};
use wharf_kafka::kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use wharf_kafka::kafka_protocol::messages::{
    AlterClientQuotasRequest, DescribeClientQuotasRequest,
};
use wharf_kafka::kafka_protocol::protocol::StrBytes;
use wharf_kafka::kafka_protocol::ResponseError;
use wharf_kafka::Client;

use crate::group_cmd::format_table;

/// Which entity a command is about: `--user` and/or `--client-id`, each a name or `<default>`.
#[derive(clap::Args, Debug, Clone)]
pub struct EntityArgs {
    /// User the quota applies to (`<default>` for the default user).
    #[arg(long)]
    pub user: Option<String>,
    /// Client id the quota applies to (`<default>` for the default client id).
    #[arg(long)]
    pub client_id: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum QuotaCommand {
    /// Sets quotas of a user and/or client id.
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// Bytes per second a producer may send.
        #[arg(long)]
        producer_byte_rate: Option<f64>,
        /// Bytes per second a consumer may fetch.
        #[arg(long)]
        consumer_byte_rate: Option<f64>,
        /// Percentage of one thread's time the client's requests may use (100 = a thread).
        #[arg(long)]
        request_percentage: Option<f64>,
    },
    /// Removes quotas of a user and/or client id (all of its keys unless some are named).
    Remove {
        #[command(flatten)]
        entity: EntityArgs,
        /// Keys to remove (producer_byte_rate, consumer_byte_rate, request_percentage);
        /// default: all.
        #[arg(long = "key")]
        keys: Vec<String>,
    },
    /// Lists quotas, optionally only those of a user and/or client id.
    Describe {
        #[command(flatten)]
        entity: EntityArgs,
    },
}

const DEFAULT: &str = "<default>";

fn parts(entity: &EntityArgs) -> Vec<(&'static str, Option<String>)> {
    let name = |n: &String| (n != DEFAULT).then(|| n.clone());
    let mut out = Vec::new();
    if let Some(u) = &entity.user {
        out.push(("user", name(u)));
    }
    if let Some(c) = &entity.client_id {
        out.push(("client-id", name(c)));
    }
    out
}

/// `wharf quota describe` rows: entity, key, value.
pub fn table(rows: &[(String, String, f64)]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(entity, key, value)| vec![entity.clone(), key.clone(), format!("{value}")])
        .collect();
    format_table(&["ENTITY", "QUOTA", "VALUE"], &body)
}

pub async fn run(bootstrap: &str, cmd: QuotaCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    let alter = |entity: &EntityArgs, ops: Vec<OpData>| {
        let entity_parts = parts(entity);
        AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
            .with_entity(
                entity_parts
                    .into_iter()
                    .map(|(kind, name)| {
                        EntityData::default()
                            .with_entity_type(StrBytes::from_static_str(kind))
                            .with_entity_name(name.map(StrBytes::from_string))
                    })
                    .collect(),
            )
            .with_ops(ops)])
    };
    let request = match &cmd {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let ops: Vec<OpData> = [
                ("producer_byte_rate", producer_byte_rate),
                ("consumer_byte_rate", consumer_byte_rate),
                ("request_percentage", request_percentage),
            ]
            .into_iter()
            .filter_map(|(k, v)| {
                v.map(|v| {
                    OpData::default()
                        .with_key(StrBytes::from_static_str(k))
                        .with_value(v)
                })
            })
            .collect();
            if ops.is_empty() {
                bail!(
                    "nothing to set: give --producer-byte-rate, --consumer-byte-rate and/or --request-percentage"
                );
            }
            Some(alter(entity, ops))
        }
        QuotaCommand::Remove { entity, keys } => {
            let keys = if keys.is_empty() {
                vec![
                    "producer_byte_rate".to_string(),
                    "consumer_byte_rate".to_string(),
                    "request_percentage".to_string(),
                ]
            } else {
                keys.clone()
            };
            Some(alter(
                entity,
                keys.into_iter()
                    .map(|k| OpData::default().with_key(k.into()).with_remove(true))
                    .collect(),
            ))
        }
        QuotaCommand::Describe { .. } => None,
    };
    if let Some(request) = request {
        let response = client.send(request).await?;
        for entry in &response.entries {
            if let Some(error) = ResponseError::try_from_code(entry.error_code) {
                bail!(
                    "{error}: {}",
                    entry.error_message.as_deref().unwrap_or_default()
                );
            }
        }
        println!("quota updated");
        return Ok(());
    }
    let QuotaCommand::Describe { entity } = cmd else {
        return Ok(());
    };
    let components = parts(&entity)
        .into_iter()
        .map(|(kind, name)| {
            let c = ComponentData::default().with_entity_type(StrBytes::from_static_str(kind));
            match name {
                Some(n) => c
                    .with_match_type(0)
                    .with_match(Some(StrBytes::from_string(n))),
                None => c.with_match_type(1),
            }
        })
        .collect();
    let response = client
        .send(DescribeClientQuotasRequest::default().with_components(components))
        .await?;
    if let Some(error) = ResponseError::try_from_code(response.error_code) {
        bail!("describing quotas: {error}");
    }
    let mut rows = Vec::new();
    for entry in response.entries.unwrap_or_default() {
        let name = entry
            .entity
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    e.entity_type,
                    e.entity_name.as_deref().unwrap_or(DEFAULT)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        for v in entry.values {
            rows.push((name.clone(), v.key.to_string(), v.value));
        }
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    print!("{}", table(&rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_laid_out_under_their_headers() {
        let text = table(&[(
            "client-id=slow".into(),
            "producer_byte_rate".into(),
            1_048_576.0,
        )]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ENTITY"));
        assert!(lines[1].contains("client-id=slow") && lines[1].contains("1048576"));
    }
}

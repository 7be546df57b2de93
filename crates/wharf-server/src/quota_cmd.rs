//! `wharf quota set|remove|describe`: client quotas (AlterClientQuotas,
//! DescribeClientQuotas) against a running broker through `wharf_kafka::admin`, as
//! `kafka-configs.sh --entity-type clients|users` does. The table is built by a pure function.

use anyhow::bail;
use wharf_kafka::admin::quota::{EntityComponent, QuotaOp};
use wharf_kafka::admin::Admin;

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

fn parts(entity: &EntityArgs) -> Vec<EntityComponent> {
    let component = |entity_type: &str, n: &String| EntityComponent {
        entity_type: entity_type.to_owned(),
        name: (n != DEFAULT).then(|| n.clone()),
    };
    let mut out = Vec::new();
    if let Some(u) = &entity.user {
        out.push(component("user", u));
    }
    if let Some(c) = &entity.client_id {
        out.push(component("client-id", c));
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
    let mut admin = Admin::connect(bootstrap).await?;
    let change = match &cmd {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let ops: Vec<QuotaOp> = [
                ("producer_byte_rate", producer_byte_rate),
                ("consumer_byte_rate", consumer_byte_rate),
                ("request_percentage", request_percentage),
            ]
            .into_iter()
            .filter_map(|(k, v)| {
                v.map(|value| QuotaOp::Set {
                    key: k.to_owned(),
                    value,
                })
            })
            .collect();
            if ops.is_empty() {
                bail!(
                    "nothing to set: give --producer-byte-rate, --consumer-byte-rate and/or --request-percentage"
                );
            }
            Some((parts(entity), ops))
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
            Some((
                parts(entity),
                keys.into_iter()
                    .map(|key| QuotaOp::Remove { key })
                    .collect(),
            ))
        }
        QuotaCommand::Describe { .. } => None,
    };
    if let Some((entity, ops)) = change {
        admin.alter_client_quotas(&entity, &ops).await?;
        println!("quota updated");
        return Ok(());
    }
    let QuotaCommand::Describe { entity } = cmd else {
        return Ok(());
    };
    let mut rows = Vec::new();
    for entry in admin.describe_client_quotas(&parts(&entity)).await? {
        let name = entry
            .entity
            .iter()
            .map(|e| format!("{}={}", e.entity_type, e.name.as_deref().unwrap_or(DEFAULT)))
            .collect::<Vec<_>>()
            .join(",");
        for (key, value) in entry.values {
            rows.push((name.clone(), key, value));
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

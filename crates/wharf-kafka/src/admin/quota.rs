//! Client quotas: AlterClientQuotas and DescribeClientQuotas.

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::ResponseError;

use super::{check, str_bytes, Admin, AdminError};

/// `DescribeClientQuotas` match type: the component's name exactly.
const MATCH_EXACT: i8 = 0;
/// `DescribeClientQuotas` match type: the default entity of the type.
const MATCH_DEFAULT: i8 = 1;

/// One part of a quota entity, e.g. `user` `alice`; `name` is `None` for the type's default
/// entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityComponent {
    /// `user` or `client-id`.
    pub entity_type: String,
    pub name: Option<String>,
}

/// A change to one quota key of an entity.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaOp {
    Set { key: String, value: f64 },
    Remove { key: String },
}

/// An entity's quotas as DescribeClientQuotas reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaEntry {
    pub entity: Vec<EntityComponent>,
    /// `(key, value)`, in the broker's order.
    pub values: Vec<(String, f64)>,
}

impl Admin {
    /// Applies `ops` to the quotas of the entity made of `entity`.
    pub async fn alter_client_quotas(
        &mut self,
        entity: &[EntityComponent],
        ops: &[QuotaOp],
    ) -> Result<(), AdminError> {
        let entry = EntryData::default()
            .with_entity(
                entity
                    .iter()
                    .map(|part| {
                        EntityData::default()
                            .with_entity_type(str_bytes(&part.entity_type))
                            .with_entity_name(part.name.as_deref().map(str_bytes))
                    })
                    .collect(),
            )
            .with_ops(
                ops.iter()
                    .map(|op| match op {
                        QuotaOp::Set { key, value } => OpData::default()
                            .with_key(str_bytes(key))
                            .with_value(*value),
                        QuotaOp::Remove { key } => {
                            OpData::default().with_key(str_bytes(key)).with_remove(true)
                        }
                    })
                    .collect(),
            );
        let request = AlterClientQuotasRequest::default().with_entries(vec![entry]);
        let response = self.client.send(request).await?;
        for entry in &response.entries {
            if let Some(error) = ResponseError::try_from_code(entry.error_code) {
                return Err(AdminError::Kafka {
                    context: None,
                    name: error.to_string(),
                    code: entry.error_code,
                    message: Some(
                        entry
                            .error_message
                            .as_deref()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Quotas of every entity matching all of `filter` (all entities when it is empty), in
    /// the broker's order.
    pub async fn describe_client_quotas(
        &mut self,
        filter: &[EntityComponent],
    ) -> Result<Vec<QuotaEntry>, AdminError> {
        let components = filter
            .iter()
            .map(|part| {
                let component =
                    ComponentData::default().with_entity_type(str_bytes(&part.entity_type));
                match &part.name {
                    Some(name) => component
                        .with_match_type(MATCH_EXACT)
                        .with_match(Some(str_bytes(name))),
                    None => component.with_match_type(MATCH_DEFAULT),
                }
            })
            .collect();
        let response = self
            .client
            .send(DescribeClientQuotasRequest::default().with_components(components))
            .await?;
        check(response.error_code, None, "describing quotas")?;
        Ok(response
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|entry| QuotaEntry {
                entity: entry
                    .entity
                    .iter()
                    .map(|e| EntityComponent {
                        entity_type: e.entity_type.to_string(),
                        name: e.entity_name.as_ref().map(ToString::to_string),
                    })
                    .collect(),
                values: entry
                    .values
                    .iter()
                    .map(|v| (v.key.to_string(), v.value))
                    .collect(),
            })
            .collect())
    }
}

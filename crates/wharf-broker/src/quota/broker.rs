//! The broker's side of client quotas: the configured quotas (persisted in `meta.json`
//! before an AlterClientQuotas is answered) and the token buckets that enforce them.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{EntityName, Match, QuotaConfigs, QuotaEntity, QuotaRecord, Throttles, ANONYMOUS};
use crate::{Broker, BrokerError};

/// Quotas and their buckets, held by the broker.
#[derive(Default)]
pub struct QuotaState {
    configs: RwLock<QuotaConfigs>,
    throttles: Mutex<Throttles>,
}

impl QuotaState {
    pub(crate) fn new(records: &[QuotaRecord]) -> Self {
        Self {
            configs: RwLock::new(QuotaConfigs::from_records(records)),
            throttles: Mutex::new(Throttles::default()),
        }
    }
}

impl Broker {
    /// AlterClientQuotas for one entity: validated, then (unless `validate_only`) saved
    /// durably and applied.
    pub fn alter_client_quota(
        &self,
        entity: &QuotaEntity,
        ops: &[(String, Option<f64>)],
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let state = self.quota_state();
        let mut meta = self.meta_lock();
        let mut next = state
            .configs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.alter(entity, ops)?;
        if validate_only {
            return Ok(());
        }
        if let Some(log) = self.metadata_log() {
            drop(meta);
            return log.submit(crate::metadata_log::MetadataRequest::AlterClientQuota {
                entity: entity.clone(),
                ops: ops.to_vec(),
            });
        }
        meta.set_quotas(next.records())?;
        *state
            .configs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        tracing::info!(?entity, ?ops, "client quota altered");
        Ok(())
    }

    /// Every quota after `ops` on `entity` (the controller's plan of an AlterClientQuotas).
    pub(crate) fn planned_quotas(
        &self,
        entity: &QuotaEntity,
        ops: &[(String, Option<f64>)],
    ) -> Result<Vec<QuotaRecord>, BrokerError> {
        let mut next = self
            .quota_state()
            .configs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.alter(entity, ops)?;
        Ok(next.records())
    }

    /// Enforces `records` from now on (a committed metadata record; `meta.json` has them).
    pub(crate) fn set_quota_records(&self, records: &[QuotaRecord]) {
        *self
            .quota_state()
            .configs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            QuotaConfigs::from_records(records);
    }

    /// DescribeClientQuotas: entities matching `filter` and their values.
    pub fn describe_client_quotas(
        &self,
        filter: &[(String, Match)],
        strict: bool,
    ) -> Vec<(QuotaEntity, std::collections::BTreeMap<String, f64>)> {
        self.quota_state()
            .configs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .describe(filter, strict)
    }

    /// Counts `amount` (bytes, or nanoseconds of thread time for `request_percentage`)
    /// against the quota `key` of `client_id`; returns how long the client must be held
    /// back (zero when no quota applies or it is within its rate).
    pub fn throttle(&self, client_id: &str, key: &'static str, amount: u64) -> Duration {
        let state = self.quota_state();
        let resolved = {
            let configs = state
                .configs
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if configs.is_empty() {
                return Duration::ZERO;
            }
            configs.resolve(ANONYMOUS, client_id, key)
        };
        let Some((entity, value)) = resolved else {
            return Duration::ZERO;
        };
        // A request percentage is thread time per second: 1 % is 10 ms (in ns) per second.
        let rate = if key == super::REQUEST_PERCENTAGE {
            value * 1e7
        } else {
            value
        };
        state
            .throttles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            // Exact below 2^53 bytes, far above any one request.
            .record(
                entity,
                key,
                rate,
                u32::try_from(amount).map_or(f64::from(u32::MAX), f64::from),
                Instant::now(),
            )
    }
}

/// An entity from wire parts: `(entity type, name or None for the default)`.
pub fn entity_of(parts: &[(String, Option<String>)]) -> Result<QuotaEntity, BrokerError> {
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    for (kind, name) in parts {
        let name = name.clone().map_or(EntityName::Default, EntityName::Named);
        let slot = match kind.as_str() {
            "user" => &mut entity.user,
            "client-id" => &mut entity.client_id,
            other => {
                return Err(BrokerError::InvalidRequest(format!(
                    "quota entity type {other} is not supported (user, client-id)"
                )))
            }
        };
        if slot.replace(name).is_some() {
            return Err(BrokerError::InvalidRequest(format!(
                "quota entity type {kind} given twice"
            )));
        }
    }
    Ok(entity)
}

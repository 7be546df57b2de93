//! Client quotas, as Kafka has them: byte rates for producers and consumers and the request
//! time percentage per user and client id (or their defaults), resolved with Kafka's precedence and enforced by a token
//! bucket per resolved entity. A client over its quota is throttled (told how long to wait,
//! and held back that long), never refused.
//!
//! Precedence, most specific first (Kafka's): user+client, user+default client, user,
//! default user+client, default user+default client, default user, client, default client.
//! Without authentication every client is the user `ANONYMOUS`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::BrokerError;

mod broker;
pub use broker::{entity_of, QuotaState};

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
/// Kafka's request quota: the percentage of one thread's time a client's requests may use
/// (100 = one whole thread), measured as in [`crate::work`].
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
/// The quota keys Wharf enforces.
pub const KEYS: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// The principal of an unauthenticated client.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// The longest a client is held back for one request (Kafka's quota window × samples).
pub const MAX_THROTTLE: Duration = Duration::from_secs(11);

/// A user or client id in a quota entity: a name, or the default for its type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

/// What a quota applies to: a user, a client id, or both (each a name or the default).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

/// How a DescribeClientQuotas filter matches one entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Exact(String),
    Default,
    /// Any name (not the default).
    AnyNamed,
}

/// One quota entity and its values, as stored in `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub entity: QuotaEntity,
    pub values: BTreeMap<String, f64>,
}

/// Every configured quota.
#[derive(Debug, Clone, Default)]
pub struct QuotaConfigs {
    entries: BTreeMap<QuotaEntity, BTreeMap<String, f64>>,
}

impl QuotaConfigs {
    pub fn from_records(records: &[QuotaRecord]) -> Self {
        Self {
            entries: records
                .iter()
                .map(|r| (r.entity.clone(), r.values.clone()))
                .collect(),
        }
    }

    pub fn records(&self) -> Vec<QuotaRecord> {
        self.entries
            .iter()
            .map(|(entity, values)| QuotaRecord {
                entity: entity.clone(),
                values: values.clone(),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets (`Some`) or removes (`None`) quota values of `entity`.
    pub fn alter(
        &mut self,
        entity: &QuotaEntity,
        ops: &[(String, Option<f64>)],
    ) -> Result<(), BrokerError> {
        if entity.user.is_none() && entity.client_id.is_none() {
            return Err(BrokerError::InvalidRequest(
                "a quota entity names a user, a client id or both".into(),
            ));
        }
        for (key, value) in ops {
            if !KEYS.contains(&key.as_str()) {
                return Err(BrokerError::InvalidRequest(format!(
                    "quota {key} is not supported (supported: {})",
                    KEYS.join(", ")
                )));
            }
            if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(BrokerError::InvalidRequest(format!(
                    "quota {key} must be a positive number"
                )));
            }
        }
        let values = self.entries.entry(entity.clone()).or_default();
        for (key, value) in ops {
            match value {
                Some(v) => values.insert(key.clone(), *v),
                None => values.remove(key),
            };
        }
        if values.is_empty() {
            self.entries.remove(entity);
        }
        Ok(())
    }

    /// Entities matching every component of `filter` (`strict`: and no other entity type).
    pub fn describe(
        &self,
        filter: &[(String, Match)],
        strict: bool,
    ) -> Vec<(QuotaEntity, BTreeMap<String, f64>)> {
        let matches = |name: &Option<EntityName>, m: &Match| match (name, m) {
            (Some(EntityName::Named(n)), Match::Exact(want)) => n == want,
            (Some(EntityName::Default), Match::Default)
            | (Some(EntityName::Named(_)), Match::AnyNamed) => true,
            _ => false,
        };
        self.entries
            .iter()
            .filter(|(entity, _)| {
                filter.iter().all(|(kind, m)| match kind.as_str() {
                    "user" => matches(&entity.user, m),
                    "client-id" => matches(&entity.client_id, m),
                    _ => false,
                }) && (!strict
                    || (entity.user.is_some() == filter.iter().any(|(k, _)| k == "user")
                        && entity.client_id.is_some()
                            == filter.iter().any(|(k, _)| k == "client-id")))
            })
            .map(|(e, v)| (e.clone(), v.clone()))
            .collect()
    }

    /// The quota `key` that applies to `user` and `client_id`, with the entity it came from.
    pub fn resolve(&self, user: &str, client_id: &str, key: &str) -> Option<(QuotaEntity, f64)> {
        let named = |s: &str| Some(EntityName::Named(s.to_string()));
        let default = || Some(EntityName::Default);
        let order = [
            (named(user), named(client_id)),
            (named(user), default()),
            (named(user), None),
            (default(), named(client_id)),
            (default(), default()),
            (default(), None),
            (None, named(client_id)),
            (None, default()),
        ];
        order.into_iter().find_map(|(user, client_id)| {
            let entity = QuotaEntity { user, client_id };
            let value = self.entries.get(&entity)?.get(key)?;
            Some((entity, *value))
        })
    }
}

struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

/// Token buckets per resolved entity and quota key: capacity one second of the rate.
#[derive(Default)]
pub struct Throttles {
    buckets: HashMap<(QuotaEntity, &'static str), Bucket>,
}

impl Throttles {
    /// Takes `amount` from the bucket of `entity` and `key` at `rate` per second; returns how
    /// long the client must wait for the bucket to be back at zero.
    pub fn record(
        &mut self,
        entity: QuotaEntity,
        key: &'static str,
        rate: f64,
        amount: f64,
        now: Instant,
    ) -> Duration {
        let bucket = self.buckets.entry((entity, key)).or_insert(Bucket {
            rate,
            tokens: rate,
            at: now,
        });
        if (bucket.rate - rate).abs() > f64::EPSILON {
            // The quota changed: start over at the new rate.
            *bucket = Bucket {
                rate,
                tokens: rate,
                at: now,
            };
        }
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate) - amount;
        bucket.at = now;
        if bucket.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((-bucket.tokens / rate).min(MAX_THROTTLE.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> QuotaEntity {
        QuotaEntity {
            user: None,
            client_id: Some(EntityName::Named(name.into())),
        }
    }

    #[test]
    fn the_most_specific_quota_applies() {
        let mut q = QuotaConfigs::default();
        let set = |v| vec![(PRODUCER_BYTE_RATE.to_string(), Some(v))];
        let default_client = QuotaEntity {
            user: None,
            client_id: Some(EntityName::Default),
        };
        q.alter(&default_client, &set(10.0)).unwrap();
        q.alter(&client("slow"), &set(1.0)).unwrap();
        let user_and_client = QuotaEntity {
            user: Some(EntityName::Named(ANONYMOUS.into())),
            client_id: Some(EntityName::Named("slow".into())),
        };
        assert_eq!(
            q.resolve(ANONYMOUS, "slow", PRODUCER_BYTE_RATE),
            Some((client("slow"), 1.0))
        );
        assert_eq!(
            q.resolve(ANONYMOUS, "other", PRODUCER_BYTE_RATE)
                .map(|r| r.1),
            Some(10.0)
        );
        assert_eq!(q.resolve(ANONYMOUS, "slow", CONSUMER_BYTE_RATE), None);
        q.alter(&user_and_client, &set(5.0)).unwrap();
        assert_eq!(
            q.resolve(ANONYMOUS, "slow", PRODUCER_BYTE_RATE)
                .map(|r| r.1),
            Some(5.0)
        );
        q.alter(&user_and_client, &[(PRODUCER_BYTE_RATE.into(), None)])
            .unwrap();
        assert_eq!(
            q.resolve(ANONYMOUS, "slow", PRODUCER_BYTE_RATE)
                .map(|r| r.1),
            Some(1.0)
        );
        assert!(q
            .alter(&client("x"), &[("request_rate".into(), Some(1.0))])
            .is_err());
        assert!(q.alter(&client("x"), &set(-1.0)).is_err());
        assert_eq!(
            q.describe(&[("client-id".into(), Match::Exact("slow".into()))], true)
                .len(),
            1
        );
        assert_eq!(
            q.describe(&[("client-id".into(), Match::Default)], false)
                .len(),
            1
        );
        assert_eq!(q.describe(&[], false).len(), 2);
    }

    #[test]
    fn a_client_over_its_rate_waits_until_the_bucket_refills() {
        let mut t = Throttles::default();
        let now = Instant::now();
        // 1,000 B/s with a one-second burst: the first 1,000 bytes pass, 2,000 more owe 2 s.
        assert_eq!(
            t.record(client("c"), PRODUCER_BYTE_RATE, 1000.0, 1000.0, now),
            Duration::ZERO
        );
        let wait = t.record(client("c"), PRODUCER_BYTE_RATE, 1000.0, 2000.0, now);
        assert_eq!(wait, Duration::from_secs(2));
        // Two seconds repay the debt; half a second more refills 500 bytes, which pass.
        let later = now + Duration::from_millis(2_500);
        assert_eq!(
            t.record(client("c"), PRODUCER_BYTE_RATE, 1000.0, 500.0, later),
            Duration::ZERO
        );
        // Another client has its own bucket.
        assert_eq!(
            t.record(client("d"), PRODUCER_BYTE_RATE, 1000.0, 1000.0, now),
            Duration::ZERO
        );
        // A huge request is held back at most MAX_THROTTLE.
        assert_eq!(
            t.record(client("e"), PRODUCER_BYTE_RATE, 1.0, 1e9, now),
            MAX_THROTTLE
        );
    }
}

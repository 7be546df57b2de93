//! A typed Kafka admin API for the CLI (`wharf topic|group|txn|quota`): [`Admin`] wraps a
//! [`Client`], builds the requests, checks every error code and returns plain Rust values,
//! so callers never see a `kafka-protocol` type.
//!
//! Invariant: a non-zero Kafka error code in a response either becomes an [`AdminError`]
//! naming the Kafka error (with its message when the broker sent one) or is documented on the
//! method as skipped; it is never silently read as success.
//!
//! One file per command family: `topic`, `group`, `txn`, `quota`, `share`.

use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use thiserror::Error;

use crate::client::{Client, ClientError};

pub mod group;
pub mod quota;
pub mod share;
pub mod topic;
pub mod txn;

/// Time the broker may take for topic creation, deletion and partition changes.
const TIMEOUT_MS: i32 = 30_000;

#[derive(Debug, Error)]
pub enum AdminError {
    /// Connecting, framing or decoding failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The broker answered with a Kafka error code, e.g.
    /// `creating topic t: TopicAlreadyExists: Topic 't' already exists.`
    #[error("{}", kafka_text(.context.as_deref(), .name, .message.as_deref()))]
    Kafka {
        /// What was being done, e.g. `creating topic t`.
        context: Option<String>,
        /// Kafka's name of the error, e.g. `TopicAlreadyExists`.
        name: String,
        code: i16,
        message: Option<String>,
    },
    #[error("broker does not support {api}")]
    Unsupported { api: &'static str },
    /// The response has no entry for what was asked, e.g.
    /// `CreateTopics response has no result for topic t`.
    #[error("{what}")]
    MissingResult { what: String },
    #[error("group {group} does not exist")]
    GroupNotFound { group: String },
    #[error("unknown states: {}", .states.join(", "))]
    UnknownStates { states: Vec<String> },
}

impl AdminError {
    /// The Kafka error code, for [`AdminError::Kafka`].
    pub fn kafka_code(&self) -> Option<i16> {
        match self {
            AdminError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn kafka_text(context: Option<&str>, name: &str, message: Option<&str>) -> String {
    match (context, message) {
        (Some(context), Some(message)) => format!("{context}: {name}: {message}"),
        (Some(context), None) => format!("{context}: {name}"),
        (None, Some(message)) => format!("{name}: {message}"),
        (None, None) => name.to_owned(),
    }
}

/// `Err` naming the Kafka error when `error_code` is non-zero; `message` is kept only when the
/// broker sent a non-empty one.
fn check(error_code: i16, message: Option<&StrBytes>, context: &str) -> Result<(), AdminError> {
    let Some(error) = ResponseError::try_from_code(error_code) else {
        return Ok(());
    };
    Err(AdminError::Kafka {
        context: Some(context.to_owned()),
        name: error.to_string(),
        code: error_code,
        message: message
            .map(StrBytes::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned),
    })
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// An admin connection to one broker.
pub struct Admin {
    client: Client,
}

impl Admin {
    /// Connects and learns the broker's API versions.
    pub async fn connect(addr: &str) -> Result<Admin, AdminError> {
        Ok(Admin {
            client: Client::connect(addr).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_error_code_is_reported_by_name_with_its_message() {
        let message = StrBytes::from_static_str("Topic 't' already exists.");
        let Err(err) = check(36, Some(&message), "creating topic t") else {
            panic!("error code 36 must be an error");
        };
        assert_eq!(
            err.to_string(),
            "creating topic t: TopicAlreadyExists: Topic 't' already exists."
        );
        assert_eq!(err.kafka_code(), Some(36));
        let empty = StrBytes::from_static_str("");
        let Err(err) = check(15, Some(&empty), "listing groups") else {
            panic!("error code 15 must be an error");
        };
        assert_eq!(err.to_string(), "listing groups: CoordinatorNotAvailable");
        assert!(check(0, None, "ok").is_ok());
    }
}

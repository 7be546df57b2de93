//! Errors of the AMQP door: frame errors (close the connection) and the spec's reply codes
//! for channel (soft) and connection (hard) errors.

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("reading a frame: {0}")]
    Io(#[source] std::io::Error),
    #[error("frame of {size} bytes is larger than frame_max {frame_max}")]
    TooLarge { size: usize, frame_max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Reply codes of AMQP 0-9-1 used here.
pub mod reply {
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const FRAME_ERROR: u16 = 501;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// A failed method: closes the channel (`soft`) or the whole connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {text}")]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    /// Closes the connection, not just the channel.
    pub hard: bool,
}

impl AmqpError {
    pub fn channel(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            hard: false,
        }
    }

    pub fn connection(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            hard: true,
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::channel(reply::NOT_FOUND, format!("NOT_FOUND - {what}"))
    }

    pub fn precondition(what: impl std::fmt::Display) -> Self {
        Self::channel(
            reply::PRECONDITION_FAILED,
            format!("PRECONDITION_FAILED - {what}"),
        )
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::connection(reply::INTERNAL_ERROR, format!("INTERNAL_ERROR - {error}"))
    }
}

impl From<wharf_broker::BrokerError> for AmqpError {
    fn from(error: wharf_broker::BrokerError) -> Self {
        match error {
            wharf_broker::BrokerError::MessageTooLarge { size, max, .. } => Self::channel(
                reply::CONTENT_TOO_LARGE,
                format!("CONTENT_TOO_LARGE - message of {size} bytes is larger than {max}"),
            ),
            other => Self::internal(other),
        }
    }
}

//! An AMQP message as a Kafka record (ARCHITECTURE decision 2): key = routing key, value =
//! body, headers = the exchange, the content header's properties encoded as on the wire
//! (`amqp.properties`, what AMQP deliveries use), and a readable copy for Kafka consumers:
//! each set property as `amqp.<property-name>` and each application header under its own
//! name, values as text.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use wharf_record::{BatchBuilder, Record};

use crate::codec::{decode_properties, encode_properties};
use crate::routing::Headers;

pub const EXCHANGE_HEADER: &str = "amqp.exchange";
pub const PROPERTIES_HEADER: &str = "amqp.properties";

/// A published message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub properties: AMQPProperties,
    pub body: Vec<u8>,
    /// Publish time, milliseconds since the epoch (the record timestamp).
    pub timestamp: i64,
}

/// A field value as text (header matching, Kafka headers).
pub fn value_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::Timestamp(v) => v.to_string(),
        AMQPValue::Float(v) => v.to_string(),
        AMQPValue::Double(v) => v.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::Void => String::new(),
    }
}

/// A field table's entries as text.
pub fn table_text(table: &FieldTable) -> Headers {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), value_text(v)))
        .collect()
}

impl Message {
    /// The application headers as text (headers exchanges match on these).
    pub fn headers(&self) -> Headers {
        self.properties
            .headers()
            .as_ref()
            .map(table_text)
            .unwrap_or_default()
    }

    /// The per-message TTL of the `expiration` property, in milliseconds.
    pub fn expiration_ms(&self) -> Option<i64> {
        self.properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse::<i64>().ok())
            .filter(|ms| *ms >= 0)
    }

    /// The readable headers Kafka consumers see.
    fn readable_properties(&self) -> Vec<(String, String)> {
        let p = &self.properties;
        let short = |name: &str, v: &Option<amq_protocol::types::ShortString>| {
            v.as_ref()
                .map(|s| (format!("amqp.{name}"), s.as_str().to_string()))
        };
        let mut out: Vec<(String, String)> = [
            short("content-type", p.content_type()),
            short("content-encoding", p.content_encoding()),
            short("correlation-id", p.correlation_id()),
            short("reply-to", p.reply_to()),
            short("expiration", p.expiration()),
            short("message-id", p.message_id()),
            short("type", p.kind()),
            short("user-id", p.user_id()),
            short("app-id", p.app_id()),
            p.delivery_mode()
                .map(|m| ("amqp.delivery-mode".to_string(), m.to_string())),
            p.priority()
                .map(|m| ("amqp.priority".to_string(), m.to_string())),
            p.timestamp()
                .map(|t| ("amqp.timestamp".to_string(), t.to_string())),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.extend(self.headers());
        out
    }

    /// One v2 batch holding this message as its only record.
    pub fn to_batch(&self) -> Bytes {
        let properties = encode_properties(&self.properties);
        let readable = self.readable_properties();
        let mut headers: Vec<(&[u8], Option<&[u8]>)> = vec![
            (EXCHANGE_HEADER.as_bytes(), Some(self.exchange.as_bytes())),
            (PROPERTIES_HEADER.as_bytes(), Some(&properties)),
        ];
        headers.extend(
            readable
                .iter()
                .map(|(k, v)| (k.as_bytes(), Some(v.as_bytes()))),
        );
        let mut batch = BatchBuilder::new(self.timestamp);
        batch.push(
            Some(self.routing_key.as_bytes()),
            Some(&self.body),
            &headers,
            self.timestamp,
        );
        Bytes::from(batch.build())
    }

    /// The message a record holds (a record written by a Kafka producer has no AMQP
    /// properties: it gets empty ones).
    pub fn from_record(record: &Record<'_>) -> Self {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| *k == name.as_bytes())
                .and_then(|(_, v)| *v)
        };
        Self {
            exchange: header(EXCHANGE_HEADER)
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .unwrap_or_default(),
            routing_key: record
                .key
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            properties: header(PROPERTIES_HEADER)
                .and_then(decode_properties)
                .unwrap_or_default(),
            body: record.value.map(<[u8]>::to_vec).unwrap_or_default(),
            timestamp: record.timestamp,
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_record::{BatchHeader, RecordIter};

    #[test]
    fn round_trips_through_a_batch() {
        let mut table = FieldTable::default();
        table.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        let message = Message {
            exchange: "orders".into(),
            routing_key: "eu.new".into(),
            properties: AMQPProperties::default()
                .with_content_type("text/plain".into())
                .with_headers(table),
            body: b"hello".to_vec(),
            timestamp: 1_700_000_000_000,
        };
        let batch = message.to_batch();
        let header = BatchHeader::parse(&batch).unwrap();
        let record = RecordIter::new(&header).unwrap().next().unwrap().unwrap();
        assert_eq!(Message::from_record(&record), message);
        let names: Vec<&[u8]> = record.headers.iter().map(|(k, _)| *k).collect();
        assert!(names.contains(&b"amqp.content-type".as_slice()));
        assert!(names.contains(&b"tenant".as_slice()));
    }
}

//! Builds uncompressed v2 batches: internal records and tests.

use crate::varint::put_varlong;
use crate::HEADER_LEN;

type Header<'h> = (&'h [u8], Option<&'h [u8]>);

/// Accumulates records, then emits one batch with base offset 0 and a valid CRC.
pub struct BatchBuilder {
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
    records: Vec<u8>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
}

fn put_bytes(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64) -> Self {
        Self {
            base_timestamp,
            max_timestamp: base_timestamp,
            count: 0,
            records: Vec::new(),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
        }
    }

    /// Marks the batch as a control batch (transaction markers).
    pub fn control(mut self) -> Self {
        self.attributes |= 0x20;
        self
    }

    /// Marks the batch as part of a transaction (markers are transactional control batches).
    pub fn transactional(mut self) -> Self {
        self.attributes |= 0x10;
        self
    }

    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
        timestamp: i64,
    ) {
        let mut body =
            Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        body.push(0);
        put_varlong(&mut body, timestamp - self.base_timestamp);
        put_varlong(&mut body, i64::from(self.count));
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        put_varlong(&mut body, headers.len() as i64);
        for (name, value) in headers {
            put_bytes(&mut body, Some(name));
            put_bytes(&mut body, *value);
        }
        put_varlong(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.records.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        let length = (HEADER_LEN - 12 + self.records.len()) as i32;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2);
        out.extend_from_slice(&[0; 4]); // crc, filled below
        out.extend_from_slice(&self.attributes.to_be_bytes());
        out.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.records);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

//! Records inside an uncompressed batch.

use crate::varint::get_varlong;
use crate::{BatchHeader, RecordError};

/// One record, borrowed from its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Iterates the records of an uncompressed batch.
pub struct RecordIter<'a> {
    base_offset: i64,
    base_timestamp: i64,
    bytes: &'a [u8],
    at: usize,
    remaining: i32,
}

impl<'a> RecordIter<'a> {
    pub fn new(batch: &BatchHeader<'a>) -> Result<Self, RecordError> {
        if batch.compression() != 0 {
            return Err(RecordError::Compressed {
                codec: batch.compression(),
            });
        }
        Ok(Self {
            base_offset: batch.base_offset(),
            base_timestamp: batch.base_timestamp(),
            bytes: batch.records_bytes(),
            at: 0,
            remaining: batch.records_count(),
        })
    }

    fn bytes_field(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        let at = self.at;
        let len =
            get_varlong(self.bytes, &mut self.at).ok_or(RecordError::MalformedRecord { at })?;
        if len < 0 {
            return Ok(None);
        }
        let end = self
            .at
            .checked_add(len as usize)
            .filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(RecordError::MalformedRecord { at })?;
        let field = &self.bytes[self.at..end];
        self.at = end;
        Ok(Some(field))
    }

    fn next_record(&mut self) -> Result<Record<'a>, RecordError> {
        let start = self.at;
        let bad = RecordError::MalformedRecord { at: start };
        let length = get_varlong(self.bytes, &mut self.at).ok_or(bad.clone())?;
        let body_start = self.at;
        let _attributes = *self.bytes.get(self.at).ok_or(bad.clone())?;
        self.at += 1;
        let ts_delta = get_varlong(self.bytes, &mut self.at).ok_or(bad.clone())?;
        let offset_delta = get_varlong(self.bytes, &mut self.at).ok_or(bad.clone())?;
        let key = self.bytes_field()?;
        let value = self.bytes_field()?;
        let count = get_varlong(self.bytes, &mut self.at).ok_or(bad.clone())?;
        let mut headers = Vec::new();
        for _ in 0..count.max(0) {
            let name = self.bytes_field()?.ok_or(bad.clone())?;
            let value = self.bytes_field()?;
            headers.push((name, value));
        }
        if (self.at - body_start) as i64 != length {
            return Err(bad);
        }
        Ok(Record {
            offset: self.base_offset + offset_delta,
            timestamp: self.base_timestamp + ts_delta,
            key,
            value,
            headers,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let record = self.next_record();
        if record.is_err() {
            self.remaining = 0;
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use crate::{BatchBuilder, BatchHeader, RecordIter};

    #[test]
    fn records_round_trip_through_builder() {
        let mut b = BatchBuilder::new(500);
        b.push(
            Some(b"key"),
            Some(b"value"),
            &[(b"h1", Some(b"v")), (b"h2", None)],
            500,
        );
        b.push(None, None, &[], 510);
        let bytes = b.build();
        let h = BatchHeader::parse_checked(&bytes).unwrap();
        let recs: Vec<_> = RecordIter::new(&h)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].key, Some(&b"key"[..]));
        assert_eq!(
            recs[0].headers,
            vec![(&b"h1"[..], Some(&b"v"[..])), (&b"h2"[..], None)]
        );
        assert_eq!(recs[1].offset, 1);
        assert_eq!(recs[1].timestamp, 510);
        assert_eq!(recs[1].value, None);
    }
}

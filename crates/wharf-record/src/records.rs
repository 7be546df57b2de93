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
        // Both deltas are varlongs from the producer: any i64, so the sums are checked.
        let offset =
            self.base_offset
                .checked_add(offset_delta)
                .ok_or(RecordError::OffsetOverflow {
                    base_offset: self.base_offset,
                    offset_delta,
                })?;
        let timestamp =
            self.base_timestamp
                .checked_add(ts_delta)
                .ok_or(RecordError::TimestampOverflow {
                    base_timestamp: self.base_timestamp,
                    timestamp_delta: ts_delta,
                })?;
        Ok(Record {
            offset,
            timestamp,
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

/// The byte range of each record of an uncompressed batch, relative to the batch's first
/// byte (a record's length varint included): what a compacted copy keeps or leaves out.
pub fn record_ranges(batch: &BatchHeader<'_>) -> Result<Vec<std::ops::Range<usize>>, RecordError> {
    if batch.compression() != 0 {
        return Err(RecordError::Compressed {
            codec: batch.compression(),
        });
    }
    let bytes = batch.records_bytes();
    let mut out = Vec::with_capacity(usize::try_from(batch.records_count()).unwrap_or(0));
    let mut at = 0usize;
    for _ in 0..batch.records_count().max(0) {
        let start = at;
        let length =
            get_varlong(bytes, &mut at).ok_or(RecordError::MalformedRecord { at: start })?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|e| *e <= bytes.len())
            .ok_or(RecordError::MalformedRecord { at: start })?;
        out.push(crate::HEADER_LEN + start..crate::HEADER_LEN + end);
        at = end;
    }
    Ok(out)
}

/// The value of the first record of the first batch in `batches` (`None`: no record, or a
/// null value): how one-record batches of JSON (raft control records, metadata records) are
/// read back.
pub fn first_value(batches: &[u8]) -> Result<Option<&[u8]>, RecordError> {
    let header = BatchHeader::parse_checked(batches)?;
    Ok(RecordIter::new(&header)?
        .next()
        .transpose()?
        .and_then(|r| r.value))
}

#[cfg(test)]
mod tests {
    use crate::varint::put_varlong;
    use crate::{set_base_offset, BatchBuilder, BatchHeader, RecordError, RecordIter, HEADER_LEN};

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
        let ranges = crate::record_ranges(&h).unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].start, HEADER_LEN);
        assert_eq!(ranges[1].end, bytes.len());
    }

    /// A one-record batch whose record carries the given deltas, with a valid CRC: what a
    /// hostile producer can send.
    fn batch_with_deltas(
        base_offset: i64,
        base_timestamp: i64,
        timestamp_delta: i64,
        offset_delta: i64,
    ) -> Vec<u8> {
        let mut body = vec![0u8]; // attributes
        put_varlong(&mut body, timestamp_delta);
        put_varlong(&mut body, offset_delta);
        put_varlong(&mut body, -1); // null key
        put_varlong(&mut body, -1); // null value
        put_varlong(&mut body, 0); // no headers
        let mut b = BatchBuilder::new(base_timestamp);
        b.push(None, None, &[], base_timestamp);
        let mut bytes = b.build();
        bytes.truncate(HEADER_LEN);
        put_varlong(&mut bytes, body.len() as i64);
        bytes.extend_from_slice(&body);
        let length = i32::try_from(bytes.len() - 12).unwrap();
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        set_base_offset(&mut bytes, base_offset);
        bytes
    }

    fn first_record(bytes: &[u8]) -> Result<(i64, i64), RecordError> {
        let h = BatchHeader::parse_checked(bytes).unwrap();
        let record = RecordIter::new(&h).unwrap().next().unwrap()?;
        Ok((record.offset, record.timestamp))
    }

    #[test]
    fn crafted_deltas_in_range_read_back() {
        let bytes = batch_with_deltas(10, 1_000, 5, 0);
        assert_eq!(first_record(&bytes), Ok((10, 1_005)));
    }

    #[test]
    fn offset_delta_overflow_is_an_error_not_a_panic() {
        let bytes = batch_with_deltas(1, 1_000, 0, i64::MAX);
        assert_eq!(
            first_record(&bytes),
            Err(RecordError::OffsetOverflow {
                base_offset: 1,
                offset_delta: i64::MAX
            })
        );
        let bytes = batch_with_deltas(-1, 1_000, 0, i64::MIN);
        assert!(matches!(
            first_record(&bytes),
            Err(RecordError::OffsetOverflow { .. })
        ));
    }

    #[test]
    fn timestamp_delta_overflow_is_an_error_not_a_panic() {
        let bytes = batch_with_deltas(0, i64::MAX - 5, i64::MAX, 0);
        assert_eq!(
            first_record(&bytes),
            Err(RecordError::TimestampOverflow {
                base_timestamp: i64::MAX - 5,
                timestamp_delta: i64::MAX
            })
        );
        let bytes = batch_with_deltas(0, i64::MIN, -1, 0);
        assert!(matches!(
            first_record(&bytes),
            Err(RecordError::TimestampOverflow { .. })
        ));
    }
}

//! The RecordBatch v2 header. Invariant: a `BatchHeader` is only made from bytes whose length
//! field matches the slice, so every accessor reads inside the slice.

use crate::RecordError;

/// Bytes before the first record: baseOffset .. recordsCount.
pub const HEADER_LEN: usize = 61;
/// Bytes of baseOffset + batchLength: `batchLength` counts what follows them.
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORDS_COUNT: usize = 57;

/// A read-only view of one batch's header over its bytes.
#[derive(Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Total length of the batch starting at `bytes[0]`, from its length field.
fn framed_len(bytes: &[u8]) -> Result<usize, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated {
            need: HEADER_LEN,
            have: bytes.len(),
        });
    }
    let length = be_i32(bytes, OFF_LENGTH);
    let body = usize::try_from(length).map_err(|_| RecordError::InvalidLength { length })?;
    let total = body + LOG_OVERHEAD;
    if total < HEADER_LEN {
        return Err(RecordError::InvalidLength { length });
    }
    Ok(total)
}

impl<'a> BatchHeader<'a> {
    /// Views the first batch of `bytes`, checking its length and magic (not its CRC).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let total = framed_len(bytes)?;
        if bytes.len() < total {
            return Err(RecordError::Truncated {
                need: total,
                have: bytes.len(),
            });
        }
        let magic = bytes[OFF_MAGIC] as i8;
        if magic != 2 {
            return Err(RecordError::UnsupportedMagic { magic });
        }
        Ok(Self {
            bytes: &bytes[..total],
        })
    }

    /// Views and checks the CRC-32C of the first batch of `bytes`.
    pub fn parse_checked(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let header = Self::parse(bytes)?;
        header.verify_crc()?;
        Ok(header)
    }

    pub fn verify_crc(&self) -> Result<(), RecordError> {
        let stored = self.crc();
        let computed = crc32c::crc32c(&self.bytes[CRC_START..]);
        if stored == computed {
            Ok(())
        } else {
            Err(RecordError::CrcMismatch { stored, computed })
        }
    }

    /// The whole batch, header and records.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.bytes, OFF_BASE_OFFSET)
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, OFF_CRC) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, OFF_ATTRIBUTES)
    }
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes() & 0x07) as u8
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & 0x08 != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, OFF_LAST_OFFSET_DELTA)
    }
    /// Saturates rather than overflowing: the base offset comes from disk or the network, and a
    /// corrupt one near `i64::MAX` must not panic here (valid logs stay far below it).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, OFF_BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, OFF_MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, OFF_PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, OFF_PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, OFF_BASE_SEQUENCE)
    }
    pub fn records_count(&self) -> i32 {
        be_i32(self.bytes, OFF_RECORDS_COUNT)
    }
    /// Kafka's LogValidator check of a producer's batch: it holds at least one record and its
    /// records count matches its offset range. Offsets are assigned and found from
    /// `last_offset_delta`, so a count that disagrees would make the log claim offsets no
    /// record has, or hide records behind the next batch's offsets.
    pub fn check_records_count(&self) -> Result<(), RecordError> {
        let records_count = self.records_count();
        let last_offset_delta = self.last_offset_delta();
        if records_count <= 0 {
            return Err(RecordError::InvalidRecordsCount { records_count });
        }
        if i64::from(last_offset_delta) + 1 != i64::from(records_count) {
            return Err(RecordError::RecordsCountMismatch {
                records_count,
                last_offset_delta,
            });
        }
        Ok(())
    }
    /// The bytes after the header: records, possibly compressed.
    pub fn records_bytes(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// Splits a buffer holding back-to-back batches into their byte ranges, checking length, magic
/// and CRC of each, and that the buffer holds nothing else.
pub fn split_batches(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>, RecordError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = BatchHeader::parse_checked(&bytes[at..])?;
        if header.last_offset_delta() < 0 {
            return Err(RecordError::InvalidLastOffsetDelta {
                last_offset_delta: header.last_offset_delta(),
            });
        }
        if header.records_count() < 0 {
            return Err(RecordError::InvalidRecordsCount {
                records_count: header.records_count(),
            });
        }
        out.push(at..at + header.len());
        at += header.len();
    }
    Ok(out)
}

/// Writes the base offset of the batch at the start of `bytes` (not covered by the CRC).
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets the max timestamp (for `LogAppendTime`) and recomputes the CRC it is covered by.
pub fn set_log_append_time(bytes: &mut [u8], timestamp: i64) {
    let attributes = be_i16(bytes, OFF_ATTRIBUTES) | 0x08;
    bytes[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    bytes[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchBuilder;

    #[test]
    fn builder_output_parses_and_checks() {
        let mut b = BatchBuilder::new(1_000);
        b.push(Some(b"k"), Some(b"v1"), &[], 1_000);
        b.push(None, Some(b"v2"), &[(b"h", Some(b"x"))], 1_005);
        let bytes = b.build();
        let h = BatchHeader::parse_checked(&bytes).unwrap();
        assert_eq!(h.records_count(), 2);
        assert_eq!(h.last_offset_delta(), 1);
        assert_eq!(h.max_timestamp(), 1_005);
        assert_eq!(h.base_timestamp(), 1_000);
    }

    #[test]
    fn flipped_byte_fails_crc_and_offset_rewrite_does_not() {
        let mut b = BatchBuilder::new(0);
        b.push(Some(b"k"), Some(b"value"), &[], 7);
        let mut bytes = b.build();
        set_base_offset(&mut bytes, 42);
        let h = BatchHeader::parse_checked(&bytes).unwrap();
        assert_eq!(h.base_offset(), 42);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(
            BatchHeader::parse_checked(&bytes),
            Err(RecordError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn split_rejects_trailing_garbage_and_truncation() {
        let mut b = BatchBuilder::new(0);
        b.push(None, Some(b"a"), &[], 1);
        let one = b.build();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert_eq!(split_batches(&two).unwrap().len(), 2);
        assert!(split_batches(&two[..two.len() - 3]).is_err());
        let mut junk = one.clone();
        junk.extend_from_slice(&[1, 2, 3]);
        assert!(split_batches(&junk).is_err());
    }

    /// The builder's batch of `records` records, its count field then set to `count`.
    fn claiming(records: usize, count: i32) -> Vec<u8> {
        let mut b = BatchBuilder::new(0);
        for _ in 0..records {
            b.push(None, Some(b"a"), &[], 1);
        }
        let mut bytes = b.build();
        bytes[OFF_RECORDS_COUNT..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
        bytes
    }

    #[test]
    fn records_count_must_match_the_offset_range() {
        let check = |bytes: &[u8]| BatchHeader::parse(bytes).unwrap().check_records_count();
        assert_eq!(check(&claiming(3, 3)), Ok(()));
        assert_eq!(
            check(&claiming(1, 0)),
            Err(RecordError::InvalidRecordsCount { records_count: 0 })
        );
        assert_eq!(
            check(&claiming(1, -1)),
            Err(RecordError::InvalidRecordsCount { records_count: -1 })
        );
        assert_eq!(
            check(&claiming(3, 4)),
            Err(RecordError::RecordsCountMismatch {
                records_count: 4,
                last_offset_delta: 2
            })
        );
        assert_eq!(
            check(&claiming(3, 2)),
            Err(RecordError::RecordsCountMismatch {
                records_count: 2,
                last_offset_delta: 2
            })
        );
        // A last_offset_delta of i32::MAX must not overflow the comparison.
        let mut bytes = claiming(1, i32::MAX);
        bytes[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            check(&bytes),
            Err(RecordError::RecordsCountMismatch { .. })
        ));
    }

    #[test]
    fn split_names_a_negative_count_or_delta() {
        let mut b = BatchBuilder::new(0);
        b.push(None, Some(b"a"), &[], 1);
        let recrc = |bytes: &mut Vec<u8>| {
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        };
        let mut negative_count = b.build();
        negative_count[OFF_RECORDS_COUNT..HEADER_LEN].copy_from_slice(&(-1i32).to_be_bytes());
        recrc(&mut negative_count);
        assert_eq!(
            split_batches(&negative_count),
            Err(RecordError::InvalidRecordsCount { records_count: -1 })
        );
        let mut negative_delta = b.build();
        negative_delta[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(-3i32).to_be_bytes());
        recrc(&mut negative_delta);
        assert_eq!(
            split_batches(&negative_delta),
            Err(RecordError::InvalidLastOffsetDelta {
                last_offset_delta: -3
            })
        );
    }

    #[test]
    fn last_offset_of_a_corrupt_base_offset_saturates() {
        let mut b = BatchBuilder::new(0);
        b.push(None, Some(b"a"), &[], 1);
        b.push(None, Some(b"b"), &[], 1);
        let mut bytes = b.build();
        set_base_offset(&mut bytes, i64::MAX);
        assert_eq!(BatchHeader::parse(&bytes).unwrap().last_offset(), i64::MAX);
    }

    #[test]
    fn log_append_time_keeps_crc_valid() {
        let mut b = BatchBuilder::new(0);
        b.push(None, Some(b"a"), &[], 1);
        let mut bytes = b.build();
        set_log_append_time(&mut bytes, 99);
        let h = BatchHeader::parse_checked(&bytes).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp(), 99);
    }
}

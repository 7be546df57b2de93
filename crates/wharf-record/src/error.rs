use thiserror::Error;

/// What can be wrong with a record batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported batch magic {magic} (only v2 is accepted)")]
    UnsupportedMagic { magic: i8 },
    #[error("batch length {length} is invalid")]
    InvalidLength { length: i32 },
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed record at byte {at}")]
    MalformedRecord { at: usize },
    #[error("batch is compressed (codec {codec}); records cannot be read without decompression")]
    Compressed { codec: u8 },
    #[error("no record batch")]
    NoBatch,
    #[error("batch last offset delta {last_offset_delta} is negative")]
    InvalidLastOffsetDelta { last_offset_delta: i32 },
    #[error("batch claims {records_count} records; a batch holds at least one")]
    InvalidRecordsCount { records_count: i32 },
    #[error(
        "batch claims {records_count} records but its offset range holds \
         last_offset_delta {last_offset_delta} + 1"
    )]
    RecordsCountMismatch {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("record offset overflows: base offset {base_offset} + offset delta {offset_delta}")]
    OffsetOverflow { base_offset: i64, offset_delta: i64 },
    #[error(
        "record timestamp overflows: base timestamp {base_timestamp} + timestamp delta \
         {timestamp_delta}"
    )]
    TimestampOverflow {
        base_timestamp: i64,
        timestamp_delta: i64,
    },
}

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
}

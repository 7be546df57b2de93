//! An entry in a segment: `[len u32 LE][crc u32 LE][log_id u64 LE][batches...]`.
//! `len` counts the bytes after itself. The CRC-32C covers the log id and the first 21 bytes
//! of each batch (base offset, length, leader epoch, magic, batch CRC): the rest of each batch
//! is covered by the batch's own CRC-32C, which recovery checks too. So every byte is
//! checksummed once on the produce path, not twice.

use wharf_record::BatchHeader;

pub const ENVELOPE_LEN: usize = 16;

/// Bytes of a batch before its CRC-covered part: all of a batch the envelope checksum covers.
pub const BATCH_PREFIX: usize = 21;

/// Fills `header` (16 bytes) for `batches`.
pub fn write_header(header: &mut [u8], log_id: u64, batches: &[u8]) {
    write_header_parts(header, log_id, batches.len(), checksum(log_id, batches));
}

/// Fills `header` (16 bytes) for a body of `body_len` bytes whose checksum is `crc` (from
/// [`checksum_start`] and [`checksum_batch`], when the body is not in one buffer).
pub fn write_header_parts(header: &mut [u8], log_id: u64, body_len: usize, crc: u32) {
    let len = (ENVELOPE_LEN - 4 + body_len) as u32;
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header[8..16].copy_from_slice(&log_id.to_le_bytes());
}

/// The checksum of an envelope before its batches: [`checksum`] is this, then
/// [`checksum_batch`] of each batch in order.
pub fn checksum_start(log_id: u64) -> u32 {
    crc32c::crc32c(&log_id.to_le_bytes())
}

/// Adds one batch to `crc`, given at least its first [`BATCH_PREFIX`] bytes.
pub fn checksum_batch(crc: u32, batch_prefix: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, &batch_prefix[..BATCH_PREFIX.min(batch_prefix.len())])
}

/// Parsed header fields: `(body_len after the len field, crc, log_id)`.
pub fn parse_header(header: &[u8; ENVELOPE_LEN]) -> (u32, u32, u64) {
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[0..4]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&header[4..8]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[8..16]);
    (
        u32::from_le_bytes(len),
        u32::from_le_bytes(crc),
        u64::from_le_bytes(id),
    )
}

/// The envelope checksum: log id, then each batch's prefix. Bytes that do not parse as a
/// batch are covered whole, so damage there still shows.
pub fn checksum(log_id: u64, batches: &[u8]) -> u32 {
    let mut crc = checksum_start(log_id);
    let mut at = 0;
    while at < batches.len() {
        let rest = &batches[at..];
        match BatchHeader::parse(rest) {
            Ok(h) => {
                crc = checksum_batch(crc, rest);
                at += h.len();
            }
            Err(_) => return crc32c::crc32c_append(crc, rest),
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<u8> {
        let mut b = wharf_record::BatchBuilder::new(1);
        b.push(None, Some(b"abc"), &[], 1);
        b.build()
    }

    #[test]
    fn header_round_trips() {
        let body = batch();
        let mut h = [0u8; ENVELOPE_LEN];
        write_header(&mut h, 77, &body);
        let (len, crc, id) = parse_header(&h);
        assert_eq!(len as usize, 12 + body.len());
        assert_eq!(id, 77);
        assert_eq!(crc, checksum(77, &body));
    }

    #[test]
    fn checksum_sees_base_offset_and_log_id_changes() {
        let body = batch();
        let base = checksum(1, &body);
        assert_ne!(base, checksum(2, &body));
        let mut moved = body.clone();
        wharf_record::set_base_offset(&mut moved, 5);
        assert_ne!(base, checksum(1, &moved));
        assert_ne!(
            base,
            checksum(1, &body[..body.len() - 1]),
            "a torn batch is covered whole"
        );
    }
}

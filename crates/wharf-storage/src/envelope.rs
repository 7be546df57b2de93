//! An entry in a segment: `[len u32 LE][crc32c u32 LE][log_id u64 LE][batches...]`.
//! `len` counts the bytes after itself; the CRC-32C covers log id and batches.

pub const ENVELOPE_LEN: usize = 16;

pub fn put_header(out: &mut Vec<u8>, log_id: u64, batches: &[u8]) {
    let len = (ENVELOPE_LEN - 4 + batches.len()) as u32;
    let id = log_id.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&id), batches);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&id);
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

pub fn checksum(log_id: u64, batches: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&log_id.to_le_bytes()), batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut out = Vec::new();
        put_header(&mut out, 77, b"abc");
        let mut h = [0u8; ENVELOPE_LEN];
        h.copy_from_slice(&out);
        let (len, crc, id) = parse_header(&h);
        assert_eq!(len, 15);
        assert_eq!(id, 77);
        assert_eq!(crc, checksum(77, b"abc"));
    }
}

//! Any bytes as produced record batches: split, CRC-check, iterate records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_record::{split_batches, BatchHeader, RecordIter};

fuzz_target!(|data: &[u8]| {
    if let Ok(ranges) = split_batches(data) {
        for r in ranges {
            let Ok(h) = BatchHeader::parse(&data[r]) else { continue };
            if let Ok(records) = RecordIter::new(&h) {
                for record in records {
                    if record.is_err() {
                        break;
                    }
                }
            }
        }
    }
    // Unchecked parsing must be safe too (recovery reads headers before checksums).
    let _ = BatchHeader::parse(data).map(|h| (h.last_offset(), h.max_timestamp(), h.records_bytes().len()));
});

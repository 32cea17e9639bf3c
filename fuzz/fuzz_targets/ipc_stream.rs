//! Arrow IPC from clients (bound parameters, DoPut messages): the length checks run before
//! arrow decodes, so no input may panic or allocate what it merely claims.
#![no_main]

use cohort_engine::ipc::{DecodeBudget, check_message, read_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut budget = DecodeBudget::new("fuzz", 1 << 24);
    let _ = read_stream(bytes, &mut budget);
    // The same bytes as one Flight message: a header, then its body.
    if let Some((&split, rest)) = bytes.split_first() {
        let at = (split as usize).min(rest.len());
        let (header, body) = rest.split_at(at);
        let mut budget = DecodeBudget::new("fuzz", 1 << 24);
        let _ = check_message(header, body, &mut budget);
    }
});

//! Serialized bitmaps arriving as BINARY values (bitmap_* functions, stored tag bitmaps).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(bitmap) = cohort_sql_extensions::bitmap::decode("bitmap_count", bytes) {
        let _ = bitmap.len();
    }
});

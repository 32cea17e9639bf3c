//! sequence_match / sequence_count patterns such as `(?1)(?t<=3600)(?2)`.
#![no_main]

use cohort_sql_extensions::sequence::pattern::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = Pattern::parse("sequence_match", text, 8, |seconds| seconds);
});

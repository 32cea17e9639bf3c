//! Statement text as a client sends it: the limit check, then Cohort's own statement parser
//! (tags and segments). Neither may panic or overflow on any input.
#![no_main]

use cohort_engine::StatementLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if StatementLimits::default().check(text).is_ok() {
        let _ = cohort_engine::catalog_statement::parse(text);
    }
});

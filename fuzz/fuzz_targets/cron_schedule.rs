//! SCHEDULE '...' cron expressions of tags and segments.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = cohort_engine::segments::schedule::parse(text);
});

//! Audience expressions such as `a & (b | c) - d`, as passed to audience().
#![no_main]

use cohort_sql_extensions::bitmap::expression::TagExpr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = TagExpr::parse(text);
});

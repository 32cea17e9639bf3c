//! SQL as a PostgreSQL client sends it: the limit and depth checks, then the PostgreSQL parser
//! and the rewrite rules for DataFusion. None of them may panic or overflow on any input.
#![no_main]

use cohort_engine::StatementLimits;
use cohort_engine::postgres::PostgresParser;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static PARSER: LazyLock<PostgresParser> = LazyLock::new(PostgresParser::new);

fuzz_target!(|text: &str| {
    if let Ok(statements) = PARSER.parse(text, &StatementLimits::default()) {
        for statement in statements {
            let _ = statement.to_string();
        }
    }
});

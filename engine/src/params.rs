//! Query parameters: JDBC/ODBC-style `?` placeholders and binding values to `$n` placeholders.

use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;

use crate::error::{EngineError, Result};

/// Rewrites each `?` placeholder to `$1`, `$2`, ... in order, leaving string literals, quoted
/// identifiers and comments alone, so one planner path serves both placeholder styles.
pub fn rewrite_question_marks(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next = 1;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                // A doubled quote inside a literal is an escaped quote; copying the closing
                // quote and re-entering on the next one handles it without special casing.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut prev = '\0';
                for d in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '?' => {
                out.push('$');
                out.push_str(&next.to_string());
                next += 1;
            }
            _ => out.push(c),
        }
    }
    out
}

/// The parameter values of one row of a bound parameter batch (column i binds `$i+1`).
pub fn params_from_row(batch: &RecordBatch, row: usize) -> Result<Vec<ScalarValue>> {
    if row >= batch.num_rows() {
        return Err(EngineError::InvalidStatement(format!(
            "parameter row {row} out of range ({} rows bound)",
            batch.num_rows()
        )));
    }
    let values = batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, row))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_placeholders_outside_literals_and_comments() {
        assert_eq!(
            rewrite_question_marks(
                "SELECT '?', \"a?\" FROM t WHERE x = ? AND y > ? -- ?\n AND z = ? /* ? */"
            ),
            "SELECT '?', \"a?\" FROM t WHERE x = $1 AND y > $2 -- ?\n AND z = $3 /* ? */"
        );
    }

    #[test]
    fn escaped_quotes_stay_inside_literal() {
        assert_eq!(
            rewrite_question_marks("SELECT 'it''s ?' , ?"),
            "SELECT 'it''s ?' , $1"
        );
    }

    #[test]
    fn dollar_placeholders_are_untouched() {
        assert_eq!(rewrite_question_marks("SELECT $1, $2"), "SELECT $1, $2");
    }
}

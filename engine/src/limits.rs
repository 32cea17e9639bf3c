//! Size and shape limits checked on the SQL text before it is parsed into a tree.
//!
//! Parsing, planning and evaluation all recurse over expression trees. `a OR b OR c ...` parses
//! into a left-deep tree one level per operator, so a long generated chain would overflow a
//! worker thread's stack and abort the whole server. Counting tokens is flat and cheap, so the
//! checks run first and refuse such statements with an error that names the limit.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{EngineError, Result};

/// Limits on one statement's text. The defaults admit any hand-written or BI-generated query
/// seen in practice (an `IN (...)` list of any length counts as one operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLimits {
    /// Longest SQL text accepted, in bytes.
    pub max_sql_bytes: usize,
    /// Deepest nesting of parentheses (subqueries, function calls, grouping).
    pub max_nesting: usize,
    /// Most binary operators (AND, OR, comparisons, arithmetic, concatenation) in one statement.
    pub max_operators: usize,
    /// Deepest nesting of the parsed statement and of its plan (see [`crate::depth`]); above
    /// `max_operators`, so that a chain of that many operators still fits.
    pub max_depth: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self {
            max_sql_bytes: 1024 * 1024,
            max_nesting: 64,
            max_operators: 1000,
            max_depth: 1200,
        }
    }
}

impl StatementLimits {
    /// Refuses `sql` if it is longer than allowed; checked before anything copies or rewrites
    /// the text.
    pub fn check_size(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_sql_bytes {
            return Err(EngineError::LimitExceeded(format!(
                "statement is {} bytes; the limit is {} (max_sql_bytes)",
                sql.len(),
                self.max_sql_bytes
            )));
        }
        Ok(())
    }

    /// Refuses `sql` if it is longer, deeper or has more operators than allowed.
    pub fn check(&self, sql: &str) -> Result<()> {
        self.check_size(sql)?;
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize()
            .map_err(crate::error::syntax_error)?;
        let mut depth = 0usize;
        let mut operators = 0usize;
        for token in &tokens {
            match token {
                Token::LParen | Token::LBracket => {
                    depth += 1;
                    if depth > self.max_nesting {
                        return Err(EngineError::LimitExceeded(format!(
                            "statement nests parentheses more than {} deep (max_nesting)",
                            self.max_nesting
                        )));
                    }
                }
                Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
                token if is_binary_operator(token) => {
                    operators += 1;
                    if operators > self.max_operators {
                        return Err(EngineError::LimitExceeded(format!(
                            "statement has more than {} operators (max_operators); \
                             for long lists of values use IN (...), which counts as one",
                            self.max_operators
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn is_binary_operator(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(word.keyword, Keyword::AND | Keyword::OR),
        Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::StringConcat
        | Token::Caret
        | Token::Ampersand
        | Token::Pipe
        | Token::ShiftLeft
        | Token::ShiftRight => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn or_chain(terms: usize) -> String {
        let chain: Vec<String> = (0..terms).map(|i| format!("user_id = {i}")).collect();
        format!("SELECT * FROM events WHERE {}", chain.join(" OR "))
    }

    #[test]
    fn ordinary_statements_pass() {
        let limits = StatementLimits::default();
        limits.check(&or_chain(300)).unwrap();
        let list: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        limits
            .check(&format!(
                "SELECT * FROM events WHERE user_id IN ({})",
                list.join(",")
            ))
            .unwrap();
    }

    #[test]
    fn long_chains_deep_nesting_and_long_text_are_refused() {
        let limits = StatementLimits::default();
        let err = limits.check(&or_chain(20_000)).unwrap_err();
        assert!(err.to_string().contains("max_operators"), "{err}");
        let deep = format!("SELECT {}1{}", "(".repeat(65), ")".repeat(65));
        let err = limits.check(&deep).unwrap_err();
        assert!(err.to_string().contains("max_nesting"), "{err}");
        let small = StatementLimits {
            max_sql_bytes: 10,
            ..Default::default()
        };
        let err = small.check("SELECT 1 + 1 + 1").unwrap_err();
        assert!(err.to_string().contains("max_sql_bytes"), "{err}");
    }

    #[test]
    fn operators_inside_strings_and_comments_do_not_count() {
        let limits = StatementLimits {
            max_operators: 1,
            ..Default::default()
        };
        limits
            .check("SELECT 'a OR b OR c' -- x AND y AND z\n WHERE a = 1")
            .unwrap();
    }
}

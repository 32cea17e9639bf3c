//! Splitting SQL text into statements. `cohort sql` reads a file, standard input or a shell's
//! input, any of which may hold several statements; the engine takes one at a time.
//!
//! The split follows SQL's own tokens (sqlparser's tokenizer), so a `;` inside a string, a
//! quoted name or a comment does not end a statement. Each statement is passed on as written,
//! not re-printed from a parse: Cohort's own statements (`CREATE TAG ...`) are not standard
//! SQL, and the engine's error positions then match the user's text.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace};

/// One statement of a script, without its terminating `;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatement {
    pub sql: String,
    /// 1-based line of the statement's first token in the script.
    pub line: u64,
}

/// Why a script could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ScriptError {
    pub message: String,
    pub line: u64,
    pub column: u64,
}

impl ScriptError {
    /// The text ends inside a string, quoted name or comment: more input may complete it.
    pub fn is_unterminated(&self) -> bool {
        self.message.starts_with("Unterminated") || self.message.contains("EOF")
    }
}

/// The statements of `text`; a last statement without `;` counts. Statements that are only
/// whitespace and comments are left out.
pub fn split(text: &str) -> Result<Vec<ScriptStatement>, ScriptError> {
    let (mut statements, rest) = split_with_rest(text)?;
    statements.extend(rest);
    Ok(statements)
}

/// True when `text` ends with a `;` outside strings and comments, or holds nothing but
/// whitespace and comments: an interactive shell runs the input then, and reads another line
/// otherwise.
pub fn is_complete(text: &str) -> bool {
    match split_with_rest(text) {
        Ok((_, rest)) => rest.is_none(),
        Err(error) => !error.is_unterminated(),
    }
}

/// The statements that end in `;`, and the unterminated rest if it holds a token.
fn split_with_rest(
    text: &str,
) -> Result<(Vec<ScriptStatement>, Option<ScriptStatement>), ScriptError> {
    let tokens = Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| ScriptError {
            message: e.message,
            line: e.location.line,
            column: e.location.column,
        })?;
    let offsets = Offsets::new(text);
    let mut statements = Vec::new();
    // The start of the current statement: its first token's byte offset and line.
    let mut start: Option<(usize, u64)> = None;
    for token in tokens {
        match token.token {
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon => {
                let end = offsets.byte(token.span.start);
                if let Some((from, line)) = start.take() {
                    statements.push(ScriptStatement {
                        sql: text[from..end].trim_end().to_string(),
                        line,
                    });
                }
            }
            _ if start.is_none() => {
                start = Some((offsets.byte(token.span.start), token.span.start.line));
            }
            _ => {}
        }
    }
    let rest = start.map(|(from, line)| ScriptStatement {
        sql: strip_trailing_comment(text[from..].trim_end()).to_string(),
        line,
    });
    Ok((statements, rest))
}

/// A last statement without `;` may end in a `-- comment`, which would otherwise swallow
/// anything the engine appends after the statement.
fn strip_trailing_comment(sql: &str) -> &str {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return sql;
    };
    match tokens.last() {
        Some(Token::Whitespace(Whitespace::SingleLineComment { comment, prefix })) => {
            let length = prefix.len() + comment.len();
            sql[..sql.len() - length].trim_end()
        }
        _ => sql,
    }
}

/// Byte offsets of the tokenizer's 1-based (line, column) locations, columns in characters.
struct Offsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Self { text, line_starts }
    }

    fn byte(&self, location: Location) -> usize {
        let line_start = self.line_starts[(location.line as usize).saturating_sub(1)];
        self.text[line_start..]
            .char_indices()
            .nth((location.column as usize).saturating_sub(1))
            .map_or(self.text.len(), |(at, _)| line_start + at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(text: &str) -> Vec<(String, u64)> {
        split(text)
            .unwrap()
            .into_iter()
            .map(|s| (s.sql, s.line))
            .collect()
    }

    #[test]
    fn semicolons_inside_strings_names_and_comments_do_not_split() {
        let script = "SELECT 'a;b' AS \"x;y\"; -- one; two\nSELECT 2 /* ; */;\n\n  SELECT 3";
        assert_eq!(
            sqls(script),
            [
                ("SELECT 'a;b' AS \"x;y\"".to_string(), 1),
                ("SELECT 2 /* ; */".to_string(), 2),
                ("SELECT 3".to_string(), 4),
            ]
        );
    }

    #[test]
    fn empty_statements_and_comment_only_text_are_skipped() {
        assert_eq!(sqls(";;  -- nothing\n/* at all */ ;"), []);
        assert_eq!(sqls(""), []);
        assert_eq!(
            sqls("SELECT 1 -- the last one"),
            [("SELECT 1".to_string(), 1)]
        );
    }

    #[test]
    fn cohort_statements_are_passed_on_as_written() {
        let script = "CREATE TAG buyer AS\n  SELECT user_id FROM events WHERE event = 'purchase';\nSHOW TAGS;";
        assert_eq!(
            sqls(script),
            [
                (
                    "CREATE TAG buyer AS\n  SELECT user_id FROM events WHERE event = 'purchase'"
                        .to_string(),
                    1
                ),
                ("SHOW TAGS".to_string(), 3),
            ]
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(
            sqls("SELECT 'ünïcödé'; SELECT 'ß'"),
            [
                ("SELECT 'ünïcödé'".to_string(), 1),
                ("SELECT 'ß'".to_string(), 1)
            ]
        );
    }

    #[test]
    fn input_is_complete_after_a_final_semicolon_outside_quotes() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1; -- done"));
        assert!(is_complete("   "));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT 'a;\nb"));
        assert!(!is_complete("SELECT 1 /* ;"));
        assert!(!is_complete("SELECT 1 AS \"open;"));
        assert!(!is_complete("SELECT 1; SELECT 2"));
    }

    #[test]
    fn an_unterminated_string_is_an_error_with_its_position() {
        let error = split("SELECT 1;\nSELECT 'open").unwrap_err();
        assert!(error.is_unterminated(), "{error}");
        assert_eq!(error.line, 2);
    }
}

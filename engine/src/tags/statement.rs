//! The tag statements, recognised before DataFusion's parser sees the text:
//!
//! ```sql
//! CREATE [OR REPLACE] TAG [IF NOT EXISTS] name [SCHEDULE 'cron'] AS <query>
//! DROP TAG [IF EXISTS] name
//! SHOW TAGS
//! REFRESH TAG name
//! REFRESH TAGS
//! ```
//!
//! The query after `AS` is kept as the user wrote it (the text from `AS` to the end), so `SHOW
//! TAGS` shows it unchanged; it is planned by DataFusion like any other query.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Word};

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagStatement {
    Create {
        name: String,
        query: String,
        schedule: Option<String>,
        or_replace: bool,
        if_not_exists: bool,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
    Show,
    /// `None`: every tag.
    Refresh {
        name: Option<String>,
    },
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(word))
}

/// The statement if `sql` is a tag statement, `None` if it is something else.
pub fn parse(sql: &str) -> Result<Option<TagStatement>> {
    let dialect = GenericDialect {};
    let Ok(mut parser) = Parser::new(&dialect).try_with_sql(sql) else {
        // Not even tokenizable: DataFusion's parser reports it.
        return Ok(None);
    };
    let [first, second, third, fourth] = parser.peek_tokens::<4>();
    let statement = if is_word(&first, "CREATE")
        && (is_word(&second, "TAG")
            || (is_word(&second, "OR") && is_word(&third, "REPLACE") && is_word(&fourth, "TAG")))
    {
        parser.next_token();
        let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        parser.next_token(); // TAG
        let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = tag_name(&mut parser)?;
        let schedule =
            if is_word(&parser.peek_token().token, "SCHEDULE") {
                parser.next_token();
                Some(parser.parse_literal_string().map_err(|e| {
                    syntax(&format!("SCHEDULE takes a quoted cron expression: {e}"))
                })?)
            } else {
                None
            };
        if !parser.parse_keyword(Keyword::AS) {
            return Err(syntax(&format!(
                "expected AS <query> after the tag name, found {}",
                parser.peek_token().token
            )));
        }
        let start = parser.peek_token().span.start;
        let query = text_from(sql, start).trim().trim_end_matches(';').trim();
        if query.is_empty() {
            return Err(syntax("expected a query after AS"));
        }
        TagStatement::Create {
            name,
            query: query.to_string(),
            schedule,
            or_replace,
            if_not_exists,
        }
    } else if is_word(&first, "DROP") && is_word(&second, "TAG") {
        parser.next_token();
        parser.next_token();
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = tag_name(&mut parser)?;
        end(&mut parser)?;
        TagStatement::Drop { name, if_exists }
    } else if is_word(&first, "SHOW") && is_word(&second, "TAGS") {
        parser.next_token();
        parser.next_token();
        end(&mut parser)?;
        TagStatement::Show
    } else if is_word(&first, "REFRESH") && is_word(&second, "TAGS") {
        parser.next_token();
        parser.next_token();
        end(&mut parser)?;
        TagStatement::Refresh { name: None }
    } else if is_word(&first, "REFRESH") && is_word(&second, "TAG") {
        parser.next_token();
        parser.next_token();
        let name = tag_name(&mut parser)?;
        end(&mut parser)?;
        TagStatement::Refresh { name: Some(name) }
    } else {
        return Ok(None);
    };
    Ok(Some(statement))
}

fn syntax(message: &str) -> EngineError {
    EngineError::InvalidStatement(format!("tag statement: {message}"))
}

/// A tag name: letters, digits and `_`, not starting with a digit; case-insensitive (kept in
/// lower case) so that tag expressions need no quoting.
fn tag_name(parser: &mut Parser) -> Result<String> {
    let token = parser.next_token().token;
    let Token::Word(word) = &token else {
        return Err(syntax(&format!("expected a tag name, found {token}")));
    };
    let name = word.value.to_lowercase();
    validate_name(&name)?;
    Ok(name)
}

pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(syntax(&format!(
            "invalid tag name '{name}': use letters, digits and '_', starting with a letter"
        )))
    }
}

fn end(parser: &mut Parser) -> Result<()> {
    while parser.consume_token(&Token::SemiColon) {}
    match parser.peek_token().token {
        Token::EOF => Ok(()),
        other => Err(syntax(&format!("unexpected {other} after the statement"))),
    }
}

/// The text of `sql` from a token's location (1-based line and character column) to the end.
fn text_from(sql: &str, at: Location) -> &str {
    let mut line = 1;
    let mut column = 1;
    for (offset, c) in sql.char_indices() {
        if line == at.line && column == at.column {
            return &sql[offset..];
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            parse("create tag VIP as\n  SELECT user_id FROM profiles WHERE plan = 'pro';").unwrap(),
            Some(TagStatement::Create {
                name: "vip".into(),
                query: "SELECT user_id FROM profiles WHERE plan = 'pro'".into(),
                schedule: None,
                or_replace: false,
                if_not_exists: false,
            })
        );
        assert_eq!(
            parse(
                "CREATE OR REPLACE TAG IF NOT EXISTS t SCHEDULE '0 * * * *' AS SELECT 1 AS user_id"
            )
            .unwrap(),
            Some(TagStatement::Create {
                name: "t".into(),
                query: "SELECT 1 AS user_id".into(),
                schedule: Some("0 * * * *".into()),
                or_replace: true,
                if_not_exists: true,
            })
        );
        assert_eq!(
            parse("DROP TAG IF EXISTS t").unwrap(),
            Some(TagStatement::Drop {
                name: "t".into(),
                if_exists: true
            })
        );
        assert_eq!(parse("show tags;").unwrap(), Some(TagStatement::Show));
        assert_eq!(
            parse("REFRESH TAGS").unwrap(),
            Some(TagStatement::Refresh { name: None })
        );
        assert_eq!(
            parse("REFRESH TAG t").unwrap(),
            Some(TagStatement::Refresh {
                name: Some("t".into())
            })
        );
        assert_eq!(parse("SELECT 1").unwrap(), None);
        assert_eq!(parse("CREATE TABLE t (a INT)").unwrap(), None);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |sql: &str| parse(sql).unwrap_err().to_string();
        assert!(message("CREATE TAG t SELECT 1").contains("expected AS <query>"));
        assert!(message("CREATE TAG t AS").contains("expected a query after AS"));
        assert!(message("CREATE TAG 1x AS SELECT 1").contains("expected a tag name"));
        assert!(message("CREATE TAG t SCHEDULE 5 AS SELECT 1").contains("quoted cron"));
        assert!(message("DROP TAG t extra").contains("unexpected extra"));
        assert!(message("REFRESH TAG").contains("expected a tag name"));
    }
}

//! `SHOW FUNCTIONS [LIKE 'pattern' | ILIKE 'pattern' | WHERE condition]`: every function a
//! session offers, one row per name and kind, with its syntax, description and (for Cohort's
//! own) an example, ordered by name.
//!
//! The statement is rewritten into a query over `information_schema.routines` before it is
//! classified, so it is planned, admitted and limited like any other query. DataFusion's own
//! `SHOW FUNCTIONS` joins `information_schema.parameters`, which has no rows for functions whose
//! arguments are checked by the function itself (all of Cohort's), so it would leave them out.
//! The examples, and the syntax and description of table functions (which `routines` lists
//! bare), come from Cohort's function catalog.

use cohort_sql_extensions::catalog::{ENTRIES, Entry};
use datafusion::sql::sqlparser::ast::{ShowStatementFilter, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{EngineError, Result};

/// The query that answers `sql` when it is `SHOW FUNCTIONS ...`; `None` for any other statement.
pub fn rewrite(sql: &str) -> Result<Option<String>> {
    let dialect = GenericDialect {};
    let Ok(mut parser) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(None);
    };
    let [first, second] = parser.peek_tokens::<2>();
    if !is_word(&first, "SHOW") || !is_word(&second, "FUNCTIONS") {
        return Ok(None);
    }
    let statement = parser
        .parse_statement()
        .map_err(|e| EngineError::InvalidStatement(format!("syntax error: {e}")))?;
    while parser.consume_token(&Token::SemiColon) {}
    if parser.peek_token().token != Token::EOF {
        return Err(EngineError::InvalidStatement(format!(
            "syntax error: unexpected {} after SHOW FUNCTIONS",
            parser.peek_token().token
        )));
    }
    let Statement::ShowFunctions { filter } = statement else {
        return Ok(None);
    };
    let condition = match filter {
        None => None,
        Some(ShowStatementFilter::Like(pattern) | ShowStatementFilter::NoKeyword(pattern)) => {
            Some(format!("function_name LIKE {}", quoted(&pattern)))
        }
        Some(ShowStatementFilter::ILike(pattern)) => {
            Some(format!("function_name ILIKE {}", quoted(&pattern)))
        }
        Some(ShowStatementFilter::Where(condition)) => Some(condition.to_string()),
    };
    Ok(Some(query(condition.as_deref())))
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `CASE routine_name WHEN name THEN text ... END` over the catalog entries `pick` selects.
fn by_name(pick: impl Fn(&Entry) -> bool, text: impl Fn(&Entry) -> String) -> String {
    let branches: String = ENTRIES
        .iter()
        .filter(|entry| pick(entry))
        .map(|entry| format!(" WHEN {} THEN {}", quoted(entry.name), quoted(&text(entry))))
        .collect();
    if branches.is_empty() {
        "CAST(NULL AS VARCHAR)".to_string()
    } else {
        format!("CASE routine_name{branches} END")
    }
}

fn query(condition: Option<&str>) -> String {
    let table_functions: Vec<&str> = cohort_sql_extensions::table_functions()
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let is_table_function = |entry: &Entry| table_functions.contains(&entry.name);
    let syntax = by_name(is_table_function, |entry| entry.syntax.to_string());
    let description = by_name(
        is_table_function,
        cohort_sql_extensions::catalog::description,
    );
    let example = by_name(|_| true, |entry| entry.example.to_string());
    let filter = condition
        .map(|condition| format!(" WHERE {condition}"))
        .unwrap_or_default();
    format!(
        "SELECT function_name, function_type, syntax, description, example FROM (\
         SELECT routine_name AS function_name, function_type, \
         coalesce(max(syntax_example), {syntax}) AS syntax, \
         coalesce(max(description), {description}) AS description, \
         {example} AS example \
         FROM information_schema.routines GROUP BY routine_name, function_type)\
         {filter} ORDER BY function_name, function_type"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_show_functions_is_rewritten() {
        assert_eq!(rewrite("SELECT 1").unwrap(), None);
        assert_eq!(rewrite("SHOW TABLES").unwrap(), None);
        let all = rewrite("show functions;").unwrap().unwrap();
        assert!(all.contains("FROM information_schema.routines"), "{all}");
        assert!(!all.contains(" WHERE "), "{all}");
        let like = rewrite("SHOW FUNCTIONS LIKE 'it''s%'").unwrap().unwrap();
        assert!(like.contains("WHERE function_name LIKE 'it''s%'"), "{like}");
        let condition = rewrite("SHOW FUNCTIONS WHERE function_type = 'TABLE'")
            .unwrap()
            .unwrap();
        assert!(
            condition.contains("WHERE function_type = 'TABLE'"),
            "{condition}"
        );
        let error = rewrite("SHOW FUNCTIONS LIKE 'a' extra").unwrap_err();
        assert!(error.to_string().contains("syntax error"), "{error}");
        // A hostile condition is refused by the parser's recursion limit, not a stack overflow.
        let deep = format!(
            "SHOW FUNCTIONS WHERE {}1{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let error = rewrite(&deep).unwrap_err();
        assert!(error.to_string().contains("syntax error"), "{error}");
    }
}

//! The catalog statements for tags, segments, traits, holdouts and identity rules, recognised
//! before DataFusion's parser sees the text (`OBJECT` is `TAG`, `SEGMENT`, `TRAIT`, `HOLDOUT` or
//! `IDENTITY RULE`, `OBJECTS` its plural):
//!
//! ```sql
//! CREATE [OR REPLACE] OBJECT [IF NOT EXISTS] name [SCHEDULE 'cron'] AS <query>
//! CREATE [OR REPLACE] TAG [IF NOT EXISTS] name [BY PERSON] [SCHEDULE 'cron'] AS <query>
//! CREATE [OR REPLACE] TRAIT [IF NOT EXISTS] name TYPE BIGINT|DOUBLE|TEXT|BOOLEAN|TIMESTAMP [SCHEDULE 'cron'] AS <query>
//! CREATE [OR REPLACE] SEGMENT [IF NOT EXISTS] name [BY PERSON] [SCHEDULE 'cron'] [SPLIT (group weight, ...) [SEED 'text']] AS <query>
//! CREATE [OR REPLACE] HOLDOUT [IF NOT EXISTS] name PERCENT p [SEED 'text']
//! CREATE [OR REPLACE] IDENTITY RULE [IF NOT EXISTS] name [PRIORITY n] [LIMIT m] AS <query>
//! ALTER OBJECT name SET SCHEDULE 'cron'
//! ALTER OBJECT name DROP SCHEDULE
//! DROP OBJECT [IF EXISTS] name
//! SHOW OBJECTS
//! REFRESH OBJECT name
//! REFRESH OBJECTS
//! REFRESH IDENTITY [SCHEDULE 'cron']
//! ALTER IDENTITY SET SCHEDULE 'cron' | DROP SCHEDULE
//! SHOW IDENTITY
//! ```
//!
//! The query after `AS` is kept as the user wrote it (the text from `AS` to the end), so `SHOW`
//! shows it unchanged; it is planned by DataFusion like any other query.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Word};

use crate::error::{EngineError, Result};

/// What a catalog statement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Tag,
    Segment,
    Trait,
    Holdout,
    IdentityRule,
}

impl ObjectKind {
    const ALL: [ObjectKind; 5] = [
        ObjectKind::Tag,
        ObjectKind::Segment,
        ObjectKind::Trait,
        ObjectKind::Holdout,
        ObjectKind::IdentityRule,
    ];

    pub fn singular(self) -> &'static str {
        match self {
            ObjectKind::Tag => "tag",
            ObjectKind::Segment => "segment",
            ObjectKind::Trait => "trait",
            ObjectKind::Holdout => "holdout",
            ObjectKind::IdentityRule => "identity rule",
        }
    }

    /// The error for a name that is not defined.
    pub fn unknown(self, name: &str) -> EngineError {
        EngineError::InvalidStatement(format!(
            "unknown {} '{name}' (SHOW {} lists the {}s)",
            self.singular(),
            self.plural(),
            self.singular()
        ))
    }

    /// What CREATE does when `name` is taken: `Ok(true)` means there is nothing to do
    /// (IF NOT EXISTS), `Ok(false)` to go on (the name is free, or OR REPLACE).
    pub fn create_taken(
        self,
        name: &str,
        exists: bool,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool> {
        match (exists, if_not_exists, or_replace) {
            (false, _, _) => Ok(false),
            (true, true, _) => Ok(true),
            (true, false, true) => Ok(false),
            (true, false, false) => Err(EngineError::InvalidStatement(format!(
                "{} '{name}' already exists (use CREATE OR REPLACE {} to change it)",
                self.singular(),
                self.singular().to_uppercase()
            ))),
        }
    }

    /// What DROP does when `name` is not defined: nothing with IF EXISTS, else an error.
    pub fn drop_missing(self, name: &str, if_exists: bool) -> Result<()> {
        if if_exists {
            Ok(())
        } else {
            Err(self.unknown(name))
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Tag => "TAGS",
            ObjectKind::Segment => "SEGMENTS",
            ObjectKind::Trait => "TRAITS",
            ObjectKind::Holdout => "HOLDOUTS",
            ObjectKind::IdentityRule => "IDENTITY RULES",
        }
    }

    /// "a" or "an", as the kind's name needs.
    pub fn article(self) -> &'static str {
        if self.singular().starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        }
    }

    /// The words that name the kind, in the singular or plural.
    fn words(self, plural: bool) -> Vec<&'static str> {
        let plural_words: Vec<&'static str> = self.plural().split(' ').collect();
        if plural {
            return plural_words;
        }
        let mut words = plural_words;
        let last = words.pop().expect("a word");
        words.push(&last[..last.len() - 1]);
        words
    }
}

/// The clauses of CREATE besides the name and the query; which ones a kind takes is checked
/// when the statement is parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// `TYPE word` of a trait, as written.
    pub value_type: Option<String>,
    /// `SPLIT (...)` of a segment, checked and normalised (`treatment 45, control 55`).
    pub split: Option<String>,
    /// `SEED 'text'` of a split segment or a holdout.
    pub seed: Option<String>,
    /// `PERCENT p` of a holdout, in hundredths of a percent (10,000 is everyone).
    pub percent: Option<u32>,
    /// `PRIORITY n` of an identity rule (lower first).
    pub priority: Option<u32>,
    /// `LIMIT m` of an identity rule.
    pub limit: Option<u32>,
    /// `BY PERSON` of a tag or segment: members are persons, not identifiers.
    pub by_person: bool,
}

/// The statements about identity as a whole rather than one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityStatement {
    /// `REFRESH IDENTITY [SCHEDULE 'cron']`: resolve now (and from now on on the schedule).
    Refresh { schedule: Option<String> },
    /// `ALTER IDENTITY SET SCHEDULE 'cron'` (`Some`) or `DROP SCHEDULE` (`None`).
    SetSchedule(Option<String>),
    /// `SHOW IDENTITY`: the current resolution and its schedule.
    Show,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogStatement {
    Create {
        kind: ObjectKind,
        name: String,
        /// Empty for a holdout, which has no query.
        query: String,
        schedule: Option<String>,
        options: CreateOptions,
        or_replace: bool,
        if_not_exists: bool,
    },
    /// `schedule: None` removes the schedule.
    AlterSchedule {
        kind: ObjectKind,
        name: String,
        schedule: Option<String>,
    },
    Drop {
        kind: ObjectKind,
        name: String,
        if_exists: bool,
    },
    Show {
        kind: ObjectKind,
    },
    /// `name: None`: every object of the kind.
    Refresh {
        kind: ObjectKind,
        name: Option<String>,
    },
    Identity(IdentityStatement),
}

impl CatalogStatement {
    pub fn kind(&self) -> ObjectKind {
        match self {
            CatalogStatement::Create { kind, .. }
            | CatalogStatement::AlterSchedule { kind, .. }
            | CatalogStatement::Drop { kind, .. }
            | CatalogStatement::Show { kind }
            | CatalogStatement::Refresh { kind, .. } => *kind,
            CatalogStatement::Identity(_) => ObjectKind::IdentityRule,
        }
    }

    /// The error for a statement routed to another kind's handler than its own.
    pub fn misrouted(&self) -> EngineError {
        EngineError::InvalidStatement(format!("not a statement of this kind: {self:?}"))
    }

    /// Whether the statement only reads.
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            CatalogStatement::Show { .. } | CatalogStatement::Identity(IdentityStatement::Show)
        )
    }
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(word))
}

/// The object kind the tokens from `at` name in the singular (`TAG`) or plural (`TAGS`), and
/// how many tokens that takes.
fn object(tokens: &[Token], at: usize, plural: bool) -> Option<(ObjectKind, usize)> {
    ObjectKind::ALL.into_iter().find_map(|kind| {
        let words = kind.words(plural);
        let matches = words
            .iter()
            .enumerate()
            .all(|(i, word)| tokens.get(at + i).is_some_and(|token| is_word(token, word)));
        matches.then_some((kind, words.len()))
    })
}

/// The statement if `sql` is a catalog statement, `None` if it is something else.
pub fn parse(sql: &str) -> Result<Option<CatalogStatement>> {
    let dialect = GenericDialect {};
    let Ok(mut parser) = Parser::new(&dialect).try_with_sql(sql) else {
        // Not even tokenizable: DataFusion's parser reports it.
        return Ok(None);
    };
    let tokens: Vec<Token> = parser.peek_tokens::<6>().to_vec();
    let (first, second) = (&tokens[0], &tokens[1]);
    if let Some(statement) = identity_statement(&mut parser, &tokens)? {
        return Ok(Some(statement));
    }
    let create_kind = if is_word(first, "CREATE") {
        object(&tokens, 1, false).or_else(|| {
            (is_word(second, "OR") && is_word(&tokens[2], "REPLACE"))
                .then(|| object(&tokens, 3, false))
                .flatten()
        })
    } else {
        None
    };
    let statement = if let Some((kind, words)) = create_kind {
        parser.next_token();
        let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        skip(&mut parser, words); // TAG / IDENTITY RULE
        let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = object_name(&mut parser, kind)?;
        let (schedule, options) = create_clauses(&mut parser, kind)?;
        if kind == ObjectKind::Holdout {
            end(&mut parser)?;
            return Ok(Some(CatalogStatement::Create {
                kind,
                name,
                query: String::new(),
                schedule,
                options,
                or_replace,
                if_not_exists,
            }));
        }
        if !parser.parse_keyword(Keyword::AS) {
            return Err(syntax(&format!(
                "expected AS <query> after the {} name, found {}",
                kind.singular(),
                parser.peek_token().token
            )));
        }
        let start = parser.peek_token().span.start;
        let query = text_from(sql, start).trim().trim_end_matches(';').trim();
        if query.is_empty() {
            return Err(syntax("expected a query after AS"));
        }
        CatalogStatement::Create {
            kind,
            name,
            query: query.to_string(),
            schedule,
            options,
            or_replace,
            if_not_exists,
        }
    } else if let (true, Some((kind, words))) = (is_word(first, "ALTER"), object(&tokens, 1, false))
    {
        skip(&mut parser, 1 + words);
        let name = object_name(&mut parser, kind)?;
        let schedule = if parser.parse_keyword(Keyword::SET)
            && is_word(&parser.peek_token().token, "SCHEDULE")
        {
            parser.next_token();
            Some(cron_text(&mut parser)?)
        } else if parser.parse_keyword(Keyword::DROP)
            && is_word(&parser.peek_token().token, "SCHEDULE")
        {
            parser.next_token();
            None
        } else {
            return Err(syntax(&format!(
                "expected SET SCHEDULE 'cron' or DROP SCHEDULE after ALTER {} {name}",
                kind.singular().to_uppercase()
            )));
        };
        end(&mut parser)?;
        CatalogStatement::AlterSchedule {
            kind,
            name,
            schedule,
        }
    } else if let (true, Some((kind, words))) = (is_word(first, "DROP"), object(&tokens, 1, false))
    {
        skip(&mut parser, 1 + words);
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = object_name(&mut parser, kind)?;
        end(&mut parser)?;
        CatalogStatement::Drop {
            kind,
            name,
            if_exists,
        }
    } else if let (true, Some((kind, words))) = (is_word(first, "SHOW"), object(&tokens, 1, true)) {
        skip(&mut parser, 1 + words);
        end(&mut parser)?;
        CatalogStatement::Show { kind }
    } else if let (true, Some((kind, words))) =
        (is_word(first, "REFRESH"), object(&tokens, 1, true))
    {
        skip(&mut parser, 1 + words);
        end(&mut parser)?;
        CatalogStatement::Refresh { kind, name: None }
    } else if let (true, Some((kind, words))) =
        (is_word(first, "REFRESH"), object(&tokens, 1, false))
    {
        skip(&mut parser, 1 + words);
        let name = object_name(&mut parser, kind)?;
        end(&mut parser)?;
        CatalogStatement::Refresh {
            kind,
            name: Some(name),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(statement))
}

fn skip(parser: &mut Parser, tokens: usize) {
    for _ in 0..tokens {
        parser.next_token();
    }
}

/// `REFRESH IDENTITY [SCHEDULE 'cron']`, `ALTER IDENTITY SET|DROP SCHEDULE`, `SHOW IDENTITY`;
/// `None` for anything else (`IDENTITY RULE` statements are the catalog's usual forms).
fn identity_statement(parser: &mut Parser, tokens: &[Token]) -> Result<Option<CatalogStatement>> {
    let verb = ["REFRESH", "ALTER", "SHOW"]
        .into_iter()
        .find(|verb| is_word(&tokens[0], verb));
    let Some(verb) = verb else {
        return Ok(None);
    };
    if !is_word(&tokens[1], "IDENTITY")
        || is_word(&tokens[2], "RULE")
        || is_word(&tokens[2], "RULES")
    {
        return Ok(None);
    }
    skip(parser, 2);
    let statement = match verb {
        "REFRESH" => {
            let schedule = if is_word(&parser.peek_token().token, "SCHEDULE") {
                parser.next_token();
                Some(cron_text(parser)?)
            } else {
                None
            };
            IdentityStatement::Refresh { schedule }
        }
        "ALTER" => {
            let set = parser.parse_keyword(Keyword::SET);
            let dropped = !set && parser.parse_keyword(Keyword::DROP);
            if !(set || dropped) || !is_word(&parser.next_token().token, "SCHEDULE") {
                return Err(syntax(
                    "expected SET SCHEDULE 'cron' or DROP SCHEDULE after ALTER IDENTITY",
                ));
            }
            IdentityStatement::SetSchedule(if set { Some(cron_text(parser)?) } else { None })
        }
        _ => IdentityStatement::Show,
    };
    end(parser)?;
    Ok(Some(CatalogStatement::Identity(statement)))
}

/// The clauses between the name and AS, in any order, each once and only where `kind` takes it.
fn create_clauses(
    parser: &mut Parser,
    kind: ObjectKind,
) -> Result<(Option<String>, CreateOptions)> {
    let mut schedule = None;
    let mut options = CreateOptions::default();
    let clause_of = |clause: &str, takes: bool| {
        if takes {
            Ok(())
        } else {
            Err(syntax(&format!(
                "{} {} takes no {clause} clause",
                kind.article(),
                kind.singular()
            )))
        }
    };
    loop {
        let token = parser.peek_token().token;
        let Token::Word(Word {
            value,
            quote_style: None,
            ..
        }) = &token
        else {
            break;
        };
        let clause = value.to_ascii_uppercase();
        let seen = match clause.as_str() {
            "SCHEDULE" => {
                clause_of(
                    "SCHEDULE",
                    !matches!(kind, ObjectKind::Holdout | ObjectKind::IdentityRule),
                )?;
                parser.next_token();
                schedule.replace(cron_text(parser)?).is_some()
            }
            "TYPE" => {
                clause_of("TYPE", kind == ObjectKind::Trait)?;
                parser.next_token();
                let word = match parser.next_token().token {
                    Token::Word(word) => word.value.to_uppercase(),
                    other => {
                        return Err(syntax(&format!(
                            "expected a type after TYPE (BIGINT, DOUBLE, TEXT, BOOLEAN or TIMESTAMP), found {other}"
                        )));
                    }
                };
                options.value_type.replace(word).is_some()
            }
            "SPLIT" => {
                clause_of("SPLIT", kind == ObjectKind::Segment)?;
                parser.next_token();
                options.split.replace(split_text(parser)?).is_some()
            }
            "SEED" => {
                clause_of(
                    "SEED",
                    matches!(kind, ObjectKind::Segment | ObjectKind::Holdout),
                )?;
                parser.next_token();
                let seed = parser
                    .parse_literal_string()
                    .map_err(|e| syntax(&format!("SEED takes a quoted text: {e}")))?;
                options.seed.replace(seed).is_some()
            }
            "PERCENT" => {
                clause_of("PERCENT", kind == ObjectKind::Holdout)?;
                parser.next_token();
                let percent = match parser.next_token().token {
                    Token::Number(text, _) => percent_buckets(&text)?,
                    other => {
                        return Err(syntax(&format!(
                            "PERCENT takes a number above 0 and below 100, found {other}"
                        )));
                    }
                };
                options.percent.replace(percent).is_some()
            }
            "BY" => {
                clause_of(
                    "BY PERSON",
                    matches!(kind, ObjectKind::Tag | ObjectKind::Segment),
                )?;
                parser.next_token();
                if !is_word(&parser.next_token().token, "PERSON") {
                    return Err(syntax("expected PERSON after BY"));
                }
                std::mem::replace(&mut options.by_person, true)
            }
            "PRIORITY" | "LIMIT" => {
                clause_of(&clause, kind == ObjectKind::IdentityRule)?;
                parser.next_token();
                let number = match parser.next_token().token {
                    Token::Number(text, _) => text.parse::<u32>().ok(),
                    _ => None,
                };
                let minimum = u32::from(clause == "LIMIT");
                let Some(number) = number.filter(|n| *n >= minimum) else {
                    return Err(syntax(&format!(
                        "{clause} takes a whole number of at least {minimum}"
                    )));
                };
                let slot = if clause == "LIMIT" {
                    &mut options.limit
                } else {
                    &mut options.priority
                };
                slot.replace(number).is_some()
            }
            _ => break,
        };
        if seen {
            return Err(syntax(&format!("{clause} is given twice")));
        }
    }
    if kind == ObjectKind::Trait && options.value_type.is_none() {
        return Err(syntax(
            "expected TYPE BIGINT|DOUBLE|TEXT|BOOLEAN|TIMESTAMP after the trait name",
        ));
    }
    if kind == ObjectKind::Holdout && options.percent.is_none() {
        return Err(syntax("expected PERCENT p after the holdout name"));
    }
    if kind == ObjectKind::Segment && options.seed.is_some() && options.split.is_none() {
        return Err(syntax(
            "SEED applies to a SPLIT: add SPLIT (group weight, ...)",
        ));
    }
    Ok((schedule, options))
}

/// `(name weight, name weight, ...)` after SPLIT, checked, as `SplitGroups` writes it.
fn split_text(parser: &mut Parser) -> Result<String> {
    if !parser.consume_token(&Token::LParen) {
        return Err(syntax(
            "SPLIT takes groups in parentheses: SPLIT (treatment 45, control 45, holdout 10)",
        ));
    }
    let mut text = String::new();
    loop {
        match parser.next_token().token {
            Token::RParen => break,
            Token::EOF => return Err(syntax("SPLIT (...) is missing its ')'")),
            Token::Comma => text.push(','),
            Token::Word(word) => {
                text.push(' ');
                text.push_str(&word.value);
            }
            Token::Number(number, _) => {
                text.push(' ');
                text.push_str(&number);
            }
            other => return Err(syntax(&format!("unexpected {other} in SPLIT (...)"))),
        }
    }
    let groups = cohort_sql_extensions::split::SplitGroups::parse(&text).map_err(|e| match e {
        datafusion::error::DataFusionError::Plan(message) => syntax(&message),
        other => syntax(&other.to_string()),
    })?;
    Ok(groups.to_string())
}

/// A holdout's percentage (up to two decimals, above 0 and below 100) in buckets.
fn percent_buckets(text: &str) -> Result<u32> {
    match cohort_sql_extensions::split::percent_in_buckets(text) {
        Some(buckets) if buckets > 0 && buckets < cohort_sql_extensions::split::BUCKETS => {
            Ok(buckets)
        }
        _ => Err(syntax(&format!(
            "PERCENT {text}: give a number above 0 and below 100 with at most two decimals"
        ))),
    }
}

/// The quoted cron expression after SCHEDULE, checked here so every statement that takes one
/// rejects a bad schedule the same way before anything runs.
fn cron_text(parser: &mut Parser) -> Result<String> {
    let text = parser
        .parse_literal_string()
        .map_err(|e| syntax(&format!("SCHEDULE takes a quoted cron expression: {e}")))?;
    crate::segments::schedule::parse(&text)?;
    Ok(text)
}

fn syntax(message: &str) -> EngineError {
    EngineError::InvalidStatement(format!("statement: {message}"))
}

/// A name: letters, digits and `_`, not starting with a digit; case-insensitive (kept in lower
/// case) so that tag expressions need no quoting.
fn object_name(parser: &mut Parser, kind: ObjectKind) -> Result<String> {
    let token = parser.next_token().token;
    let Token::Word(word) = &token else {
        return Err(syntax(&format!(
            "expected a {} name, found {token}",
            kind.singular()
        )));
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
            "invalid name '{name}': use letters, digits and '_', starting with a letter"
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
    use ObjectKind::{Segment, Tag};

    #[test]
    fn parses_every_form() {
        assert_eq!(
            parse("create tag VIP as\n  SELECT user_id FROM profiles WHERE plan = 'pro';").unwrap(),
            Some(CatalogStatement::Create {
                kind: Tag,
                name: "vip".into(),
                query: "SELECT user_id FROM profiles WHERE plan = 'pro'".into(),
                schedule: None,
                options: CreateOptions::default(),
                or_replace: false,
                if_not_exists: false,
            })
        );
        assert_eq!(
            parse("CREATE OR REPLACE SEGMENT IF NOT EXISTS s SCHEDULE '0 * * * *' AS SELECT 1 AS user_id")
                .unwrap(),
            Some(CatalogStatement::Create {
                kind: Segment,
                name: "s".into(),
                query: "SELECT 1 AS user_id".into(),
                schedule: Some("0 * * * *".into()),
                options: CreateOptions::default(),
                or_replace: true,
                if_not_exists: true,
            })
        );
        assert_eq!(
            parse("ALTER SEGMENT s SET SCHEDULE '*/5 * * * *'").unwrap(),
            Some(CatalogStatement::AlterSchedule {
                kind: Segment,
                name: "s".into(),
                schedule: Some("*/5 * * * *".into())
            })
        );
        assert_eq!(
            parse("ALTER TAG t DROP SCHEDULE").unwrap(),
            Some(CatalogStatement::AlterSchedule {
                kind: Tag,
                name: "t".into(),
                schedule: None
            })
        );
        assert_eq!(
            parse("DROP TAG IF EXISTS t").unwrap(),
            Some(CatalogStatement::Drop {
                kind: Tag,
                name: "t".into(),
                if_exists: true
            })
        );
        assert_eq!(
            parse("show segments;").unwrap(),
            Some(CatalogStatement::Show { kind: Segment })
        );
        assert_eq!(
            parse("REFRESH TAGS").unwrap(),
            Some(CatalogStatement::Refresh {
                kind: Tag,
                name: None
            })
        );
        assert_eq!(
            parse("REFRESH SEGMENT s").unwrap(),
            Some(CatalogStatement::Refresh {
                kind: Segment,
                name: Some("s".into())
            })
        );
        assert_eq!(
            parse(
                "CREATE SEGMENT s SPLIT (Treatment 45, control 45.5, holdout 9.5) SEED 'spring' \
                 SCHEDULE '0 * * * *' AS SELECT 1 AS user_id"
            )
            .unwrap(),
            Some(CatalogStatement::Create {
                kind: Segment,
                name: "s".into(),
                query: "SELECT 1 AS user_id".into(),
                schedule: Some("0 * * * *".into()),
                options: CreateOptions {
                    split: Some("treatment 45, control 45.50, holdout 9.50".into()),
                    seed: Some("spring".into()),
                    ..Default::default()
                },
                or_replace: false,
                if_not_exists: false,
            })
        );
        assert_eq!(
            parse("CREATE TRAIT ltv TYPE double AS SELECT user_id, 1.0 FROM profiles").unwrap(),
            Some(CatalogStatement::Create {
                kind: ObjectKind::Trait,
                name: "ltv".into(),
                query: "SELECT user_id, 1.0 FROM profiles".into(),
                schedule: None,
                options: CreateOptions {
                    value_type: Some("DOUBLE".into()),
                    ..Default::default()
                },
                or_replace: false,
                if_not_exists: false,
            })
        );
        assert_eq!(
            parse("CREATE HOLDOUT global PERCENT 2.5 SEED 'q4'").unwrap(),
            Some(CatalogStatement::Create {
                kind: ObjectKind::Holdout,
                name: "global".into(),
                query: String::new(),
                schedule: None,
                options: CreateOptions {
                    seed: Some("q4".into()),
                    percent: Some(250),
                    ..Default::default()
                },
                or_replace: false,
                if_not_exists: false,
            })
        );
        assert_eq!(
            parse("show holdouts").unwrap(),
            Some(CatalogStatement::Show {
                kind: ObjectKind::Holdout
            })
        );
        assert_eq!(
            parse("create or replace identity rule if not exists login priority 1 limit 2 as select a, b from t")
                .unwrap(),
            Some(CatalogStatement::Create {
                kind: ObjectKind::IdentityRule,
                name: "login".into(),
                query: "select a, b from t".into(),
                schedule: None,
                options: CreateOptions {
                    priority: Some(1),
                    limit: Some(2),
                    ..Default::default()
                },
                or_replace: true,
                if_not_exists: true,
            })
        );
        assert_eq!(
            parse("SHOW IDENTITY RULES").unwrap(),
            Some(CatalogStatement::Show {
                kind: ObjectKind::IdentityRule
            })
        );
        assert_eq!(
            parse("drop identity rule if exists login").unwrap(),
            Some(CatalogStatement::Drop {
                kind: ObjectKind::IdentityRule,
                name: "login".into(),
                if_exists: true
            })
        );
        assert_eq!(
            parse("REFRESH IDENTITY").unwrap(),
            Some(CatalogStatement::Identity(IdentityStatement::Refresh {
                schedule: None
            }))
        );
        assert_eq!(
            parse("refresh identity schedule '0 * * * *';").unwrap(),
            Some(CatalogStatement::Identity(IdentityStatement::Refresh {
                schedule: Some("0 * * * *".into())
            }))
        );
        assert_eq!(
            parse("ALTER IDENTITY DROP SCHEDULE").unwrap(),
            Some(CatalogStatement::Identity(IdentityStatement::SetSchedule(
                None
            )))
        );
        assert_eq!(
            parse("show identity").unwrap(),
            Some(CatalogStatement::Identity(IdentityStatement::Show))
        );
        assert_eq!(parse("SELECT 1").unwrap(), None);
        assert_eq!(parse("CREATE TABLE t (a INT)").unwrap(), None);
        assert_eq!(parse("DROP TABLE t").unwrap(), None);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |sql: &str| parse(sql).unwrap_err().to_string();
        assert!(message("CREATE TAG t SELECT 1").contains("expected AS <query>"));
        assert!(message("CREATE TAG t AS").contains("expected a query after AS"));
        assert!(message("CREATE TAG 1x AS SELECT 1").contains("expected a tag name"));
        assert!(message("CREATE SEGMENT s SCHEDULE 5 AS SELECT 1").contains("quoted cron"));
        assert!(message("ALTER SEGMENT s SCHEDULE 'x'").contains("expected SET SCHEDULE"));
        assert!(message("DROP TAG t extra").contains("unexpected extra"));
        assert!(message("REFRESH SEGMENT").contains("expected a segment name"));
        assert!(message("CREATE TRAIT t AS SELECT 1").contains("expected TYPE BIGINT|DOUBLE"));
        assert!(message("CREATE TAG t TYPE BIGINT AS SELECT 1").contains("a tag takes no TYPE"));
        assert!(
            message("CREATE SEGMENT s SPLIT (a 50, b 40) AS SELECT 1")
                .contains("the weights sum to 90, not 100")
        );
        assert!(
            message("CREATE SEGMENT s SEED 'x' AS SELECT 1").contains("SEED applies to a SPLIT")
        );
        assert!(message("CREATE HOLDOUT h").contains("expected PERCENT p"));
        assert!(
            message("CREATE TRAIT t TYPE BIGINT BY PERSON AS SELECT 1")
                .contains("a trait takes no BY PERSON")
        );
        assert!(message("CREATE TAG t BY USER AS SELECT 1").contains("expected PERSON after BY"));
        assert_eq!(
            parse("CREATE TAG t BY PERSON SCHEDULE '0 * * * *' AS SELECT 1 AS user_id")
                .unwrap()
                .map(|s| match s {
                    CatalogStatement::Create { options, .. } => options.by_person,
                    _ => false,
                }),
            Some(true)
        );
        assert!(message("REFRESH IDENTITY SCHEDULE 'nonsense'").contains("expected 5 fields"));
        assert!(message("SHOW IDENTITY now").contains("unexpected now"));
        assert!(
            message("CREATE IDENTITY RULE r LIMIT many AS SELECT 1, 2")
                .contains("LIMIT takes a whole number")
        );
        assert!(message("CREATE HOLDOUT h PERCENT 100").contains("below 100"));
        assert!(message("CREATE HOLDOUT h PERCENT 5 AS SELECT 1").contains("unexpected AS"));
        assert!(
            message("CREATE TRAIT t TYPE BIGINT TYPE TEXT AS SELECT 1")
                .contains("TYPE is given twice")
        );
    }
}

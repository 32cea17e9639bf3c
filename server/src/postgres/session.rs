//! The session statements PostgreSQL drivers send around their queries (`SET`, `RESET`,
//! `SHOW`, `BEGIN`, `COMMIT`, `ROLLBACK`, `DISCARD`, `DEALLOCATE`), answered by the endpoint itself:
//! none of them reaches the engine, whose statement filter refuses settings changes.
//!
//! Cohort has no multi-statement transactions: every statement commits on its own (a write is
//! one atomic Delta commit) and reads the latest snapshot. `BEGIN` ... `COMMIT` is accepted so
//! that drivers which always open a transaction (psycopg, JDBC with autocommit off, SQLAlchemy)
//! work. `ROLLBACK` ends the transaction but cannot undo a write that already committed (the
//! README says so); failing it would break the drivers' cleanup instead.
//! `SET` values are kept per connection and reported by `SHOW`; they do not change how Cohort
//! computes (timestamps are UTC). `RESET` goes back to the value the client gave at startup
//! (`application_name`, `DateStyle`, ...), else to the server's default, as in PostgreSQL.

use std::collections::HashMap;

pub use cohort_engine::postgres::SERVER_VERSION;
use cohort_engine::postgres::default_setting;
use datafusion::sql::sqlparser::ast::{Expr, Reset, Set, Statement, Value, ValueWithSpan};

/// What a session statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatement {
    /// `SET name = value` (also `SET TIME ZONE`, `SET SESSION ...`, `SET TRANSACTION ...`).
    Set {
        name: String,
        value: Option<String>,
    },
    /// `RESET name`, or `RESET ALL` when `name` is `None`.
    Reset {
        name: Option<String>,
    },
    /// `SHOW name`.
    Show {
        name: String,
    },
    Begin,
    Commit,
    Rollback,
    /// `DISCARD ALL` and friends: forget the connection's settings.
    Discard,
    /// `DEALLOCATE name`: prepared statements are the protocol's; nothing to do here.
    Deallocate,
    /// `SAVEPOINT name` (SQLAlchemy wraps some reads in one).
    Savepoint,
    /// `RELEASE SAVEPOINT name`.
    Release,
    /// `ROLLBACK TO SAVEPOINT name`.
    RollbackTo,
}

impl SessionStatement {
    /// The session statement `statement` is, if it is one.
    pub fn of(statement: &Statement) -> Option<Self> {
        Some(match statement {
            Statement::Set(set) => match set {
                Set::SingleAssignment {
                    variable, values, ..
                } => SessionStatement::Set {
                    name: variable.to_string().to_ascii_lowercase(),
                    value: Some(
                        values
                            .iter()
                            .map(setting_text)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                },
                Set::SetTimeZone { value, .. } => SessionStatement::Set {
                    name: "timezone".into(),
                    value: Some(setting_text(value)),
                },
                Set::SetNames { charset_name, .. } => SessionStatement::Set {
                    name: "client_encoding".into(),
                    value: Some(charset_name.value.clone()),
                },
                // SET TRANSACTION, SET SESSION CHARACTERISTICS, SET ROLE ...: accepted as no-ops.
                other => SessionStatement::Set {
                    name: other.to_string(),
                    value: None,
                },
            },
            Statement::Reset(reset) => SessionStatement::Reset {
                name: match &reset.reset {
                    Reset::ALL => None,
                    Reset::ConfigurationParameter(name) => {
                        Some(name.to_string().to_ascii_lowercase())
                    }
                },
            },
            Statement::ShowVariable { variable } => SessionStatement::Show {
                name: variable
                    .iter()
                    .map(|ident| ident.value.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            Statement::StartTransaction { .. } => SessionStatement::Begin,
            Statement::Commit { .. } => SessionStatement::Commit,
            Statement::Rollback {
                savepoint: None, ..
            } => SessionStatement::Rollback,
            Statement::Rollback {
                savepoint: Some(_), ..
            } => SessionStatement::RollbackTo,
            Statement::Savepoint { .. } => SessionStatement::Savepoint,
            Statement::ReleaseSavepoint { .. } => SessionStatement::Release,
            Statement::Discard { .. } => SessionStatement::Discard,
            Statement::Deallocate { .. } => SessionStatement::Deallocate,
            _ => return None,
        })
    }

    /// The command tag PostgreSQL answers with.
    pub fn tag(&self) -> &'static str {
        match self {
            SessionStatement::Set { .. } => "SET",
            SessionStatement::Reset { .. } => "RESET",
            SessionStatement::Show { .. } => "SHOW",
            SessionStatement::Begin => "BEGIN",
            SessionStatement::Commit => "COMMIT",
            SessionStatement::Rollback => "ROLLBACK",
            SessionStatement::Discard => "DISCARD ALL",
            SessionStatement::Deallocate => "DEALLOCATE",
            SessionStatement::Savepoint => "SAVEPOINT",
            SessionStatement::Release => "RELEASE",
            SessionStatement::RollbackTo => "ROLLBACK",
        }
    }
}

/// `SET x = 'a'` keeps `a`, `SET x = a` keeps `a`, `SET x = 3` keeps `3`.
fn setting_text(value: &Expr) -> String {
    match value {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(text) | Value::DoubleQuotedString(text),
            ..
        }) => text.clone(),
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

/// Startup packet fields that are not settings.
const STARTUP_FIELDS: [&str; 4] = ["user", "database", "options", "replication"];

/// One connection's settings: the startup parameters and what it `SET` since.
#[derive(Debug, Default)]
pub struct Settings {
    startup: HashMap<String, String>,
    values: HashMap<String, String>,
}

impl Settings {
    /// Settings whose session defaults are the parameters of the client's startup packet.
    pub fn with_startup<'a>(
        parameters: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        let startup = parameters
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .filter(|(name, _)| !STARTUP_FIELDS.contains(&name.as_str()))
            .collect();
        Self {
            startup,
            values: HashMap::new(),
        }
    }

    pub fn set(&mut self, name: &str, value: String) {
        self.values.insert(name.to_ascii_lowercase(), value);
    }

    /// `RESET name`.
    pub fn reset(&mut self, name: &str) {
        self.values.remove(&name.to_ascii_lowercase());
    }

    /// `RESET ALL`, `DISCARD ALL`.
    pub fn reset_all(&mut self) {
        self.values.clear();
    }

    /// Whether `name` is a parameter `SET` and `RESET` may name.
    pub fn knows(&self, name: &str) -> bool {
        self.show(name).is_some() || name.contains('.')
    }

    /// The value `SHOW name` reports, or `None` for a parameter PostgreSQL would not know.
    pub fn show(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.values
            .get(&name)
            .or_else(|| self.startup.get(&name))
            .cloned()
            .or_else(|| default_setting(&name).map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn session(sql: &str) -> Option<SessionStatement> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        SessionStatement::of(&statements[0])
    }

    #[test]
    fn drivers_session_statements_are_recognised() {
        assert_eq!(
            session("SET extra_float_digits = 3"),
            Some(SessionStatement::Set {
                name: "extra_float_digits".into(),
                value: Some("3".into())
            })
        );
        assert_eq!(
            session("SET application_name TO 'superset'"),
            Some(SessionStatement::Set {
                name: "application_name".into(),
                value: Some("superset".into())
            })
        );
        assert_eq!(
            session("SET TIME ZONE 'UTC'"),
            Some(SessionStatement::Set {
                name: "timezone".into(),
                value: Some("UTC".into())
            })
        );
        assert_eq!(
            session("SHOW transaction isolation level"),
            Some(SessionStatement::Show {
                name: "transaction isolation level".into()
            })
        );
        assert_eq!(session("BEGIN"), Some(SessionStatement::Begin));
        assert_eq!(
            session("START TRANSACTION READ ONLY"),
            Some(SessionStatement::Begin)
        );
        assert_eq!(session("COMMIT"), Some(SessionStatement::Commit));
        assert_eq!(session("ROLLBACK"), Some(SessionStatement::Rollback));
        assert_eq!(session("DISCARD ALL"), Some(SessionStatement::Discard));
        assert_eq!(
            session("SAVEPOINT \"_pg3_1\""),
            Some(SessionStatement::Savepoint)
        );
        assert_eq!(
            session("RELEASE SAVEPOINT \"_pg3_1\""),
            Some(SessionStatement::Release)
        );
        assert_eq!(
            session("ROLLBACK TO SAVEPOINT s"),
            Some(SessionStatement::RollbackTo)
        );
        assert_eq!(session("SELECT 1"), None);
    }

    #[test]
    fn show_reports_set_values_then_defaults() {
        let mut settings = Settings::default();
        assert_eq!(
            settings.show("server_version").as_deref(),
            Some(SERVER_VERSION)
        );
        assert_eq!(settings.show("no_such_setting"), None);
        settings.set("DateStyle", "ISO, DMY".into());
        assert_eq!(settings.show("datestyle").as_deref(), Some("ISO, DMY"));
        settings.reset_all();
        assert_eq!(settings.show("datestyle").as_deref(), Some("ISO, MDY"));
    }

    #[test]
    fn reset_returns_to_the_startup_value_then_the_default() {
        let startup: HashMap<String, String> = [
            ("user".to_string(), "analyst".to_string()),
            ("application_name".to_string(), "psql".to_string()),
        ]
        .into();
        let mut settings = Settings::with_startup(&startup);
        assert_eq!(settings.show("user"), None, "not a setting");
        assert_eq!(settings.show("application_name").as_deref(), Some("psql"));
        settings.set("application_name", "superset".into());
        settings.set("timezone", "Europe/Paris".into());
        assert_eq!(
            settings.show("application_name").as_deref(),
            Some("superset")
        );
        settings.reset("APPLICATION_NAME");
        assert_eq!(settings.show("application_name").as_deref(), Some("psql"));
        assert_eq!(settings.show("timezone").as_deref(), Some("Europe/Paris"));
        settings.reset_all();
        assert_eq!(settings.show("timezone").as_deref(), Some("UTC"));
        assert_eq!(
            session("RESET ALL"),
            Some(SessionStatement::Reset { name: None })
        );
        assert_eq!(
            session("RESET TimeZone"),
            Some(SessionStatement::Reset {
                name: Some("timezone".into())
            })
        );
    }
}

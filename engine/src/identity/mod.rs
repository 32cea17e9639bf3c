//! Identity resolution: one person across anonymous ids, logins, emails and devices.
//!
//! - `CREATE IDENTITY RULE name [PRIORITY n] [LIMIT m] AS <query>`: the query returns two
//!   identifier columns; each row says "these two identifiers are the same person". Identifiers
//!   are compared as text, like user ids; a row with a NULL or empty identifier links nothing.
//!   Definitions go to `_cohort/identity_rules`.
//! - `REFRESH IDENTITY [SCHEDULE 'cron']` runs every rule and resolves persons as the connected
//!   components of all pairs (see [`components`] for the LIMIT and PRIORITY guards).
//!   Identifiers that only rules name get user keys, so every identifier has one.
//! - The result is one commit of `_cohort/identity_persons` (the identity version), which holds
//!   `user_key -> person_key` for identifiers not keyed by themselves. The merges and refused
//!   pairs of a version, and a row about the refresh, are written before that commit under the
//!   version it will have; SQL shows only those of committed versions, so a refresh that fails
//!   or is killed leaves the previous version current and nothing of its own visible.
//! - SQL: `identities(user_id, user_key, person_key)` (every identifier), `identity_merges`,
//!   `identity_refusals`; `events` and `profiles` have a `person_key` column
//!   (see [`person_key`]). `SHOW IDENTITY RULES`, `SHOW IDENTITY`, `DROP IDENTITY RULE`,
//!   `ALTER IDENTITY SET SCHEDULE 'cron' | DROP SCHEDULE`.

pub mod components;
pub mod person_key;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::{cast, concat, filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};
use futures::StreamExt;

use crate::Engine;
use crate::catalog_statement::{CatalogStatement, IdentityStatement, ObjectKind};
use crate::error::{EngineError, Result};
use crate::outcome::StatementOutcome;
use crate::store::{int64_column, micros_column, text_column};
use crate::tables::{PERSON_KEY, SystemTable, USER_KEY, UTC, timestamp_type};
use components::{Previous, RulePairs};
use person_key::PersonMap;

pub const IDENTITIES_VIEW: &str = "identities";
pub const IDENTITY_MERGES_VIEW: &str = "identity_merges";
pub const IDENTITY_REFUSALS_VIEW: &str = "identity_refusals";

/// The key of the one row of `_cohort/identity_settings`.
const SETTINGS_ROW: &str = "identity";
/// The scheduler's job for identity (`:` is never part of a segment name).
pub(crate) const IDENTITY_JOB: &str = "identity:refresh";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRule {
    pub name: String,
    /// Lower runs first; rules without one run after all that have one.
    pub priority: Option<u32>,
    pub limit: Option<u32>,
    pub query: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IdentitySettings {
    schedule: Option<String>,
    updated_at: i64,
}

fn rules_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("priority", DataType::Int64, true),
        Field::new("limit", DataType::Int64, true),
        Field::new("query", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
    ]))
}

fn settings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("updated_at", timestamp_type(), false),
    ]))
}

pub(crate) fn persons_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(USER_KEY, DataType::Int64, false),
        Field::new(PERSON_KEY, DataType::Int64, false),
    ]))
}

pub(crate) fn merges_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new(PERSON_KEY, DataType::Int64, false),
        Field::new("merged_person_key", DataType::Int64, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("merged_at", timestamp_type(), false),
    ]))
}

pub(crate) fn refusals_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("limited_by", DataType::Utf8, false),
        Field::new(USER_KEY, DataType::Int64, false),
        Field::new("other_user_key", DataType::Int64, false),
        Field::new("refused_at", timestamp_type(), false),
    ]))
}

pub(crate) fn refreshes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("refreshed_at", timestamp_type(), false),
        Field::new("rules", DataType::Int64, false),
        Field::new("pairs", DataType::Int64, false),
        Field::new("identifiers", DataType::Int64, false),
        Field::new("persons", DataType::Int64, false),
        Field::new("merges", DataType::Int64, false),
        Field::new("refused", DataType::Int64, false),
        Field::new("key_watermark", DataType::Int64, false),
        Field::new("seconds", DataType::Float64, false),
    ]))
}

/// Rule definitions, the settings and the person map of the newest version read.
#[derive(Default)]
pub(crate) struct IdentityCache {
    rules: crate::catalog_objects::DefinitionCache<IdentityRule>,
    settings: crate::catalog_objects::DefinitionCache<IdentitySettings>,
    pub(crate) persons: person_key::PersonMapCache,
}

/// A row of `_cohort/identity_refreshes`.
#[derive(Debug, Clone, Default)]
struct Refreshed {
    version: i64,
    refreshed_at: i64,
    rules: i64,
    pairs: i64,
    identifiers: i64,
    persons: i64,
    merges: i64,
    refused: i64,
    key_watermark: i64,
    seconds: f64,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn micros(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone(UTC))
}

impl Engine {
    pub(crate) async fn run_identity_statement(
        &self,
        statement: CatalogStatement,
    ) -> Result<StatementOutcome> {
        match statement {
            CatalogStatement::Create {
                name,
                query,
                options,
                or_replace,
                if_not_exists,
                ..
            } => {
                let _catalog = self.catalog_lock.lock().await;
                let exists = self.identity_rules().await?.iter().any(|r| r.name == name);
                if ObjectKind::IdentityRule.create_taken(
                    &name,
                    exists,
                    or_replace,
                    if_not_exists,
                )? {
                    return Ok(StatementOutcome::RowsAffected(0));
                }
                let rule = IdentityRule {
                    name,
                    priority: options.priority,
                    limit: options.limit,
                    query,
                    created_at: now_micros(),
                };
                self.validate_rule(&rule).await?;
                self.write_rule(&rule).await?;
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Drop {
                name, if_exists, ..
            } => {
                let _catalog = self.catalog_lock.lock().await;
                if !self.identity_rules().await?.iter().any(|r| r.name == name) {
                    ObjectKind::IdentityRule.drop_missing(&name, if_exists)?;
                    return Ok(StatementOutcome::RowsAffected(0));
                }
                self.store
                    .delete_where(SystemTable::IdentityRules, "name", &name)
                    .await?;
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Show { .. } => Ok(StatementOutcome::Query(self.show_rules().await?)),
            CatalogStatement::Refresh { name: None, .. } => Ok(StatementOutcome::RowsAffected(
                self.refresh_identity().await?,
            )),
            CatalogStatement::Refresh { name: Some(_), .. } => {
                Err(EngineError::InvalidStatement(
                    "identity rules are resolved together: use REFRESH IDENTITY".into(),
                ))
            }
            CatalogStatement::AlterSchedule { .. } => Err(EngineError::InvalidStatement(
                "identity rules have no schedule of their own: use ALTER IDENTITY SET SCHEDULE 'cron'"
                    .into(),
            )),
            CatalogStatement::Identity(IdentityStatement::Refresh { schedule }) => {
                if schedule.is_some() {
                    self.set_identity_schedule(schedule).await?;
                }
                Ok(StatementOutcome::RowsAffected(
                    self.refresh_identity().await?,
                ))
            }
            CatalogStatement::Identity(IdentityStatement::SetSchedule(schedule)) => {
                self.set_identity_schedule(schedule).await?;
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Identity(IdentityStatement::Show) => {
                Ok(StatementOutcome::Query(self.show_identity().await?))
            }
        }
    }

    /// Every rule, in the order they are applied: by priority, then name.
    pub async fn identity_rules(&self) -> Result<Arc<Vec<IdentityRule>>> {
        let rules = self
            .identity_cache
            .rules
            .read(&self.store, SystemTable::IdentityRules, |batches| {
                let mut rules = Vec::new();
                for batch in batches {
                    let (names, queries) =
                        (text_column(batch, "name")?, text_column(batch, "query")?);
                    let (priorities, limits) = (
                        int64_column(batch, "priority")?,
                        int64_column(batch, "limit")?,
                    );
                    let created = micros_column(batch, "created_at")?;
                    let get = |values: &Int64Array, row: usize| {
                        values
                            .is_valid(row)
                            .then(|| values.value(row).clamp(0, i64::from(u32::MAX)) as u32)
                    };
                    for row in 0..batch.num_rows() {
                        rules.push(IdentityRule {
                            name: names.value(row).to_string(),
                            priority: get(&priorities, row),
                            limit: get(&limits, row),
                            query: queries.value(row).to_string(),
                            created_at: created.value(row),
                        });
                    }
                }
                rules.sort_by(|a, b| {
                    (a.priority.unwrap_or(u32::MAX), &a.name)
                        .cmp(&(b.priority.unwrap_or(u32::MAX), &b.name))
                });
                Ok(rules)
            })
            .await?;
        Ok(rules)
    }

    async fn write_rule(&self, rule: &IdentityRule) -> Result<()> {
        let number =
            |n: Option<u32>| Arc::new(Int64Array::from(vec![n.map(i64::from)])) as ArrayRef;
        let row = RecordBatch::try_new(
            rules_schema(),
            vec![
                Arc::new(StringArray::from(vec![rule.name.clone()])),
                number(rule.priority),
                number(rule.limit),
                Arc::new(StringArray::from(vec![rule.query.clone()])),
                micros([rule.created_at]),
            ],
        )?;
        crate::catalog_objects::write_definition(
            &self.store,
            SystemTable::IdentityRules,
            rules_schema(),
            &rule.name,
            row,
        )
        .await
    }

    async fn validate_rule(&self, rule: &IdentityRule) -> Result<()> {
        let name = &rule.name;
        let df = self.plan_statement_query(&rule.query).await.map_err(|e| {
            EngineError::InvalidStatement(format!(
                "the query of identity rule '{name}' does not plan: {e}"
            ))
        })?;
        let fields = df.schema().fields();
        if fields.len() != 2 {
            let columns: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            return Err(EngineError::InvalidStatement(format!(
                "the query of identity rule '{name}' must return two identifier columns; it returns {} ({})",
                columns.len(),
                columns.join(", ")
            )));
        }
        for field in fields {
            if field.data_type().is_nested()
                || !arrow::compute::can_cast_types(field.data_type(), &DataType::Utf8)
            {
                return Err(EngineError::InvalidStatement(format!(
                    "identity rule '{name}': column {} is {}, which is not an identifier (text or a number)",
                    field.name(),
                    field.data_type()
                )));
            }
        }
        Ok(())
    }

    /// The schedule identity is refreshed on, if any.
    pub async fn identity_schedule(&self) -> Result<Option<(String, i64)>> {
        let settings = self
            .identity_cache
            .settings
            .read(&self.store, SystemTable::IdentitySettings, |batches| {
                let mut settings = Vec::new();
                for batch in batches {
                    let schedules = text_column(batch, "schedule")?;
                    let updated = micros_column(batch, "updated_at")?;
                    for row in 0..batch.num_rows() {
                        settings.push(IdentitySettings {
                            schedule: schedules
                                .is_valid(row)
                                .then(|| schedules.value(row).to_string()),
                            updated_at: updated.value(row),
                        });
                    }
                }
                Ok(settings)
            })
            .await?;
        Ok(settings
            .first()
            .and_then(|s| s.schedule.clone().map(|c| (c, s.updated_at))))
    }

    async fn set_identity_schedule(&self, schedule: Option<String>) -> Result<()> {
        let _catalog = self.catalog_lock.lock().await;
        let row = RecordBatch::try_new(
            settings_schema(),
            vec![
                Arc::new(StringArray::from(vec![SETTINGS_ROW])),
                Arc::new(StringArray::from(vec![schedule])),
                micros([now_micros()]),
            ],
        )?;
        crate::catalog_objects::write_definition(
            &self.store,
            SystemTable::IdentitySettings,
            settings_schema(),
            SETTINGS_ROW,
            row,
        )
        .await?;
        self.scheduler_wake.notify_one();
        Ok(())
    }

    /// Resolves persons from every rule and commits them as the next identity version;
    /// returns how many identifiers belong to a person keyed by another identifier.
    pub async fn refresh_identity(&self) -> Result<u64> {
        let _catalog = self.catalog_lock.lock().await;
        let started = std::time::Instant::now();
        let rules = self.identity_rules().await?;
        // All rules' identifiers get their keys in one commit of the dictionary.
        let mut sides: Vec<(ArrayRef, ArrayRef)> = Vec::with_capacity(rules.len());
        for rule in rules.iter() {
            sides.push(self.rule_identifiers(rule).await?);
        }
        let lengths: Vec<usize> = sides.iter().map(|(left, _)| left.len()).collect();
        let all: Vec<&dyn Array> = sides
            .iter()
            .flat_map(|(left, right)| [left.as_ref(), right.as_ref()])
            .collect();
        let keys = if all.is_empty() {
            Int64Array::from(Vec::<i64>::new())
        } else {
            let all = concat(&all)?;
            self.user_keys.assign(&self.store, &all).await?
        };
        drop(sides);
        let mut offset = 0;
        let mut inputs = Vec::with_capacity(rules.len());
        for (rule, len) in rules.iter().zip(lengths) {
            let left = &keys.values()[offset..offset + len];
            let right = &keys.values()[offset + len..offset + 2 * len];
            offset += 2 * len;
            inputs.push(RulePairs {
                limit: rule.limit,
                pairs: left
                    .iter()
                    .zip(right)
                    .map(|(&a, &b)| (a as u64, b as u64))
                    .collect(),
            });
        }
        drop(keys);
        let identifiers = self.user_keys.key_count(&self.store).await?;
        let persons_table = self
            .store
            .ensure(SystemTable::IdentityPersons, persons_schema())
            .await?;
        let current = persons_table.version().unwrap_or_default() as i64;
        // The map of the very version `current` names, not of a newer one read again.
        let previous = self
            .identity_cache
            .persons
            .get(Some(&persons_table))
            .await?;
        let watermark = self.refresh_row(current).await?.map(|r| r.key_watermark);
        let version = current + 1;
        let pairs: usize = inputs.iter().map(|r| r.pairs.len()).sum();
        let resolved = {
            let previous = Arc::clone(&previous);
            tokio::task::spawn_blocking(move || {
                let previous = PreviousVersion {
                    map: previous,
                    watermark: watermark.unwrap_or_default().max(0) as u64,
                };
                components::resolve(identifiers, &mut inputs, &previous)
            })
            .await
            .map_err(|e| EngineError::Io(std::io::Error::other(e)))?
        };
        let at = now_micros();
        let rule_names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let merges = RecordBatch::try_new(
            merges_schema(),
            vec![
                Arc::new(Int64Array::from(vec![version; resolved.merges.len()])),
                Arc::new(Int64Array::from_iter_values(
                    resolved.merges.iter().map(|m| m.person_key as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    resolved.merges.iter().map(|m| m.merged_person_key as i64),
                )),
                Arc::new(StringArray::from_iter_values(
                    resolved.merges.iter().map(|m| rule_names[m.rule]),
                )),
                micros(resolved.merges.iter().map(|_| at)),
            ],
        )?;
        let refusals = RecordBatch::try_new(
            refusals_schema(),
            vec![
                Arc::new(Int64Array::from(vec![version; resolved.refusals.len()])),
                Arc::new(StringArray::from_iter_values(
                    resolved.refusals.iter().map(|r| rule_names[r.rule]),
                )),
                Arc::new(StringArray::from_iter_values(
                    resolved.refusals.iter().map(|r| rule_names[r.limited_by]),
                )),
                Arc::new(Int64Array::from_iter_values(
                    resolved.refusals.iter().map(|r| r.left as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    resolved.refusals.iter().map(|r| r.right as i64),
                )),
                micros(resolved.refusals.iter().map(|_| at)),
            ],
        )?;
        let refreshed = Refreshed {
            version,
            refreshed_at: at,
            rules: rules.len() as i64,
            pairs: pairs as i64,
            identifiers: identifiers as i64,
            persons: resolved.persons as i64,
            merges: resolved.merges.len() as i64,
            refused: resolved.refusals.len() as i64,
            key_watermark: identifiers as i64,
            seconds: started.elapsed().as_secs_f64(),
        };
        // The logs of this version first: until the persons commit lands they belong to no
        // committed version, and a later attempt at the same version replaces them.
        let from_version = col("version").gt_eq(lit(version));
        for (table, schema, rows) in [
            (SystemTable::IdentityMerges, merges_schema(), merges),
            (SystemTable::IdentityRefusals, refusals_schema(), refusals),
            (
                SystemTable::IdentityRefreshes,
                refreshes_schema(),
                refreshed.batch()?,
            ),
        ] {
            self.store
                .replace_where(table, schema, from_version.clone(), rows)
                .await?;
        }
        let moved = resolved.moved.len() as u64;
        let persons = RecordBatch::try_new(
            persons_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    resolved.moved.iter().map(|(k, _)| *k as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    resolved.moved.iter().map(|(_, p)| *p as i64),
                )),
            ],
        )?;
        drop(resolved);
        let committed = self
            .store
            .replace_where(
                SystemTable::IdentityPersons,
                persons_schema(),
                col(USER_KEY).gt_eq(lit(0i64)),
                persons,
            )
            .await?;
        if committed.version() != Some(version as u64) {
            tracing::warn!(
                expected = version,
                committed = ?committed.version(),
                "another process refreshed identity at the same time"
            );
        }
        tracing::info!(
            version,
            rules = refreshed.rules,
            pairs = refreshed.pairs,
            identifiers = refreshed.identifiers,
            persons = refreshed.persons,
            merges = refreshed.merges,
            refused = refreshed.refused,
            seconds = started.elapsed().as_secs_f64(),
            "identity refreshed"
        );
        Ok(moved)
    }

    /// A rule's pairs as two text columns, without rows that have a NULL or empty identifier.
    async fn rule_identifiers(&self, rule: &IdentityRule) -> Result<(ArrayRef, ArrayRef)> {
        let name = &rule.name;
        let df = self.plan_statement_query(&rule.query).await.map_err(|e| {
            EngineError::InvalidStatement(format!(
                "the query of identity rule '{name}' does not plan: {e}"
            ))
        })?;
        let mut stream = df.execute_stream().await?;
        let (mut lefts, mut rights): (Vec<ArrayRef>, Vec<ArrayRef>) = (vec![], vec![]);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_columns() != 2 {
                return Err(EngineError::InvalidStatement(format!(
                    "the query of identity rule '{name}' no longer returns two identifier columns"
                )));
            }
            let left = cast(batch.column(0), &DataType::Utf8)?;
            let right = cast(batch.column(1), &DataType::Utf8)?;
            let keep: arrow::array::BooleanArray = left
                .as_string::<i32>()
                .iter()
                .zip(right.as_string::<i32>().iter())
                .map(|(a, b)| {
                    Some(matches!((a, b), (Some(a), Some(b)) if !a.is_empty() && !b.is_empty()))
                })
                .collect();
            lefts.push(filter(&left, &keep)?);
            rights.push(filter(&right, &keep)?);
        }
        let join = |parts: Vec<ArrayRef>| -> Result<ArrayRef> {
            if parts.is_empty() {
                return Ok(Arc::new(StringArray::from(Vec::<&str>::new())));
            }
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            Ok(concat(&refs)?)
        };
        Ok((join(lefts)?, join(rights)?))
    }

    /// The person map of the current identity version.
    pub(crate) async fn person_map(&self) -> Result<Arc<PersonMap>> {
        let table = self.store.latest(SystemTable::IdentityPersons).await?;
        self.identity_cache.persons.get(table.as_ref()).await
    }

    /// The refresh row of identity version `version`, if that version was made by a refresh.
    async fn refresh_row(&self, version: i64) -> Result<Option<Refreshed>> {
        let Some(table) = self.store.latest(SystemTable::IdentityRefreshes).await? else {
            return Ok(None);
        };
        let batches = crate::store::scan_table(&table)
            .await?
            .filter(col("version").eq(lit(version)))?
            .collect()
            .await?;
        let mut found = None;
        for batch in &batches {
            let number = |name: &str| int64_column(batch, name);
            let refreshed_at = micros_column(batch, "refreshed_at")?;
            let seconds = cast(
                crate::store::stored_column(batch, "seconds")?,
                &DataType::Float64,
            )?;
            let seconds = seconds.as_primitive::<arrow::datatypes::Float64Type>();
            let (rules, pairs, identifiers, persons, merges, refused, watermark) = (
                number("rules")?,
                number("pairs")?,
                number("identifiers")?,
                number("persons")?,
                number("merges")?,
                number("refused")?,
                number("key_watermark")?,
            );
            for row in 0..batch.num_rows() {
                found = Some(Refreshed {
                    version,
                    refreshed_at: refreshed_at.value(row),
                    rules: rules.value(row),
                    pairs: pairs.value(row),
                    identifiers: identifiers.value(row),
                    persons: persons.value(row),
                    merges: merges.value(row),
                    refused: refused.value(row),
                    key_watermark: watermark.value(row),
                    seconds: seconds.value(row),
                });
            }
        }
        Ok(found)
    }

    /// The refresh row of the current identity version, if a refresh made it.
    async fn current_refresh(&self) -> Result<Option<Refreshed>> {
        let current = self
            .store
            .latest(SystemTable::IdentityPersons)
            .await?
            .and_then(|t| t.version());
        match current {
            Some(version) => self.refresh_row(version as i64).await,
            None => Ok(None),
        }
    }

    /// When the current identity version was refreshed.
    pub(crate) async fn identity_refreshed_at(&self) -> Result<Option<i64>> {
        Ok(self.current_refresh().await?.map(|r| r.refreshed_at))
    }

    /// `SHOW IDENTITY RULES`: rule, priority, limit, query, created_at, in the order applied.
    async fn show_rules(&self) -> Result<DataFrame> {
        let rules = self.identity_rules().await?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("rule", DataType::Utf8, false),
            Field::new("priority", DataType::Int64, true),
            Field::new("limit", DataType::Int64, true),
            Field::new("query", DataType::Utf8, false),
            Field::new("created_at", timestamp_type(), false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    rules.iter().map(|r| r.name.as_str()),
                )),
                Arc::new(Int64Array::from_iter(
                    rules.iter().map(|r| r.priority.map(i64::from)),
                )),
                Arc::new(Int64Array::from_iter(
                    rules.iter().map(|r| r.limit.map(i64::from)),
                )),
                Arc::new(StringArray::from_iter_values(
                    rules.iter().map(|r| r.query.as_str()),
                )),
                micros(rules.iter().map(|r| r.created_at)),
            ],
        )?;
        Ok(SessionContext::new().read_batch(batch)?)
    }

    /// `SHOW IDENTITY`: the current version and what its refresh found, and the schedule.
    async fn show_identity(&self) -> Result<DataFrame> {
        let refreshed = self.current_refresh().await?;
        let schedule = self.identity_schedule().await?.map(|(cron, _)| cron);
        let mut fields = vec![Field::new("version", DataType::Int64, true)];
        fields.push(Field::new("refreshed_at", timestamp_type(), true));
        let counts = [
            "rules",
            "pairs",
            "identifiers",
            "persons",
            "merges",
            "refused",
        ];
        fields.extend(counts.iter().map(|c| Field::new(*c, DataType::Int64, true)));
        fields.push(Field::new("seconds", DataType::Float64, true));
        fields.push(Field::new("schedule", DataType::Utf8, true));
        let r = refreshed.as_ref();
        let value =
            |f: fn(&Refreshed) -> i64| -> ArrayRef { Arc::new(Int64Array::from(vec![r.map(f)])) };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![r.map(|r| r.version)])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![r.map(|r| r.refreshed_at)]).with_timezone(UTC),
            ),
            value(|r| r.rules),
            value(|r| r.pairs),
            value(|r| r.identifiers),
            value(|r| r.persons),
            value(|r| r.merges),
            value(|r| r.refused),
            Arc::new(arrow::array::Float64Array::from(vec![r.map(|r| r.seconds)])),
            Arc::new(StringArray::from(vec![schedule])),
        ];
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok(SessionContext::new().read_batch(batch)?)
    }
}

impl Refreshed {
    fn batch(&self) -> Result<RecordBatch> {
        let n = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
        Ok(RecordBatch::try_new(
            refreshes_schema(),
            vec![
                n(self.version),
                micros([self.refreshed_at]),
                n(self.rules),
                n(self.pairs),
                n(self.identifiers),
                n(self.persons),
                n(self.merges),
                n(self.refused),
                n(self.key_watermark),
                Arc::new(arrow::array::Float64Array::from(vec![self.seconds])),
            ],
        )?)
    }
}

struct PreviousVersion {
    map: Arc<PersonMap>,
    watermark: u64,
}

impl Previous for PreviousVersion {
    fn person_of(&self, key: u64) -> u64 {
        self.map.person_of(key as i64) as u64
    }

    fn watermark(&self) -> u64 {
        self.watermark
    }
}

//! Traits: typed, computed values per user (lifetime orders, last seen, top category, an RFM
//! score), refreshed from a query like tags and stored typed and versioned.
//!
//! - `CREATE TRAIT name TYPE BIGINT|DOUBLE|TEXT|BOOLEAN|TIMESTAMP [SCHEDULE 'cron'] AS <query>`:
//!   the query returns `user_id` and one value column, at most one row per user; the value is
//!   cast to the type (a value that does not convert is an error naming it, never a silent
//!   NULL). A NULL value is no value. The definition goes to `_cohort/trait_definitions`; the
//!   values to `_cohort/trait_values` (partitioned by trait), replaced in **one** commit per
//!   refresh, so `trait('name', as_of)` and `audience('ltv >= 100', as_of)` travel in time.
//! - `REFRESH TRAIT name` / `REFRESH TRAITS`, `ALTER TRAIT name SET SCHEDULE ...`,
//!   `DROP TRAIT name`, `SHOW TRAITS`.
//! - SQL: `trait('name' [, as_of])` returns `user_id, user_key, value` (typed); the `traits` view
//!   has one row per user with any trait and one typed column per trait. In audience
//!   expressions traits are compared (`lifetime_orders >= 3 & ltv:[100,500)`) through a sorted
//!   index of their values (see [`index`]).
//!
//! Tags and traits share one namespace, so an audience term names exactly one of them.

pub mod functions;
pub mod index;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::compute::{CastOptions, cast, cast_with_options, filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::FormatOptions;
use cohort_sql_extensions::bitmap::RoaringTreemap;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};
use futures::StreamExt;

use crate::Engine;
use crate::catalog_statement::{CatalogStatement, ObjectKind};
use crate::error::{EngineError, Result};
use crate::outcome::StatementOutcome;
use crate::store::{micros_column, text_column};
use crate::tables::{SystemTable, USER_ID, USER_KEY, UTC, timestamp_type};
use index::TraitIndex;

pub const TRAIT: &str = "trait";
pub const TRAITS_VIEW: &str = "traits";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraitType {
    Bigint,
    Double,
    Text,
    Boolean,
    Timestamp,
}

impl TraitType {
    pub const ALL: [TraitType; 5] = [
        TraitType::Bigint,
        TraitType::Double,
        TraitType::Text,
        TraitType::Boolean,
        TraitType::Timestamp,
    ];

    /// The type a `TYPE` clause names (SQL's usual spellings are accepted).
    pub fn parse(word: &str) -> Result<Self> {
        Ok(match word.to_ascii_uppercase().as_str() {
            "BIGINT" | "INT" | "INTEGER" | "INT8" | "INT64" => TraitType::Bigint,
            "DOUBLE" | "FLOAT" | "FLOAT8" | "FLOAT64" | "REAL" => TraitType::Double,
            "TEXT" | "VARCHAR" | "STRING" => TraitType::Text,
            "BOOLEAN" | "BOOL" => TraitType::Boolean,
            "TIMESTAMP" | "TIMESTAMPTZ" => TraitType::Timestamp,
            other => {
                return Err(EngineError::InvalidStatement(format!(
                    "unknown trait type {other}: use BIGINT, DOUBLE, TEXT, BOOLEAN or TIMESTAMP"
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TraitType::Bigint => "BIGINT",
            TraitType::Double => "DOUBLE",
            TraitType::Text => "TEXT",
            TraitType::Boolean => "BOOLEAN",
            TraitType::Timestamp => "TIMESTAMP",
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            TraitType::Bigint => DataType::Int64,
            TraitType::Double => DataType::Float64,
            TraitType::Text => DataType::Utf8,
            TraitType::Boolean => DataType::Boolean,
            TraitType::Timestamp => timestamp_type(),
        }
    }

    /// The column of `_cohort/trait_values` holding values of this type.
    pub fn value_column(self) -> &'static str {
        match self {
            TraitType::Bigint => "bigint_value",
            TraitType::Double => "double_value",
            TraitType::Text => "text_value",
            TraitType::Boolean => "boolean_value",
            TraitType::Timestamp => "timestamp_value",
        }
    }
}

impl fmt::Display for TraitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraitDefinition {
    pub name: String,
    pub value_type: TraitType,
    pub query: String,
    pub schedule: Option<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

fn definitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("created_at", timestamp_type(), false),
    ]))
}

/// The stored values: one typed column per type, the one of the trait's type set.
pub fn values_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("trait", DataType::Utf8, false),
        Field::new(USER_KEY, DataType::Int64, false),
    ];
    fields.extend(
        TraitType::ALL
            .iter()
            .map(|t| Field::new(t.value_column(), t.data_type(), true)),
    );
    fields.push(Field::new("refreshed_at", timestamp_type(), false));
    Arc::new(Schema::new(fields))
}

/// Definitions and built indexes by table version (a version never changes).
#[derive(Default)]
pub(crate) struct TraitCache {
    definitions: crate::catalog_objects::DefinitionCache<TraitDefinition>,
    indexes: tokio::sync::Mutex<BTreeMap<u64, HashMap<String, Arc<TraitIndex>>>>,
}

/// Versions of the values table whose indexes stay cached.
const CACHED_VERSIONS: usize = 4;

/// What a trait query produced: the users' keys and their values, typed.
struct Evaluated {
    keys: Int64Array,
    values: ArrayRef,
}

/// Names a trait may not take: the columns of the `traits` view and the holdout prefix.
const RESERVED: [&str; 3] = [USER_ID, USER_KEY, crate::holdouts::HOLDOUT];

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Engine {
    pub(crate) async fn run_trait_statement(
        &self,
        statement: CatalogStatement,
    ) -> Result<StatementOutcome> {
        match statement {
            misrouted @ CatalogStatement::Identity(_) => Err(misrouted.misrouted()),
            CatalogStatement::Create {
                name,
                query,
                schedule,
                options,
                or_replace,
                if_not_exists,
                ..
            } => {
                let value_type =
                    TraitType::parse(options.value_type.as_deref().unwrap_or_default())?;
                let outcome = self
                    .create_trait(
                        TraitDefinition {
                            name,
                            value_type,
                            query,
                            schedule,
                            created_at: now_micros(),
                        },
                        or_replace,
                        if_not_exists,
                    )
                    .await?;
                self.scheduler_wake.notify_one();
                Ok(outcome)
            }
            CatalogStatement::AlterSchedule { name, schedule, .. } => {
                let _catalog = self.catalog_lock.lock().await;
                let mut definition = self.trait_definition(&name).await?;
                definition.schedule = schedule;
                self.write_trait_definition(&definition).await?;
                self.scheduler_wake.notify_one();
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Drop {
                name, if_exists, ..
            } => self.drop_trait(&name, if_exists).await,
            CatalogStatement::Show { .. } => Ok(StatementOutcome::Query(self.show_traits().await?)),
            CatalogStatement::Refresh { name, .. } => {
                let _catalog = self.catalog_lock.lock().await;
                let chosen: Vec<TraitDefinition> = match name {
                    None => self.trait_definitions().await?.to_vec(),
                    Some(name) => vec![self.trait_definition(&name).await?],
                };
                Ok(StatementOutcome::RowsAffected(
                    self.refresh_traits(&chosen).await?,
                ))
            }
        }
    }

    /// Every trait definition, in name order.
    pub async fn trait_definitions(&self) -> Result<Arc<Vec<TraitDefinition>>> {
        self.trait_cache
            .definitions
            .read(&self.store, SystemTable::TraitDefinitions, |batches| {
                let mut definitions = Vec::new();
                for batch in batches {
                    let (names, types, queries, schedules) = (
                        text_column(batch, "name")?,
                        text_column(batch, "type")?,
                        text_column(batch, "query")?,
                        text_column(batch, "schedule")?,
                    );
                    let created = micros_column(batch, "created_at")?;
                    for row in 0..batch.num_rows() {
                        definitions.push(TraitDefinition {
                            name: names.value(row).to_string(),
                            value_type: TraitType::parse(types.value(row))?,
                            query: queries.value(row).to_string(),
                            schedule: schedules
                                .is_valid(row)
                                .then(|| schedules.value(row).to_string()),
                            created_at: created.value(row),
                        });
                    }
                }
                Ok(definitions)
            })
            .await
    }

    pub(crate) async fn trait_definition(&self, name: &str) -> Result<TraitDefinition> {
        self.trait_definitions()
            .await?
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| ObjectKind::Trait.unknown(name))
    }

    async fn create_trait(
        &self,
        definition: TraitDefinition,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<StatementOutcome> {
        let _catalog = self.catalog_lock.lock().await;
        let name = definition.name.as_str();
        if RESERVED.contains(&name) {
            return Err(EngineError::InvalidStatement(format!(
                "'{name}' cannot name a trait: it is a column of the traits view or the holdout prefix"
            )));
        }
        if self.tag_definitions().await?.iter().any(|d| d.name == name) {
            return Err(EngineError::InvalidStatement(format!(
                "'{name}' is already a tag: tags and traits share one namespace, so audience \
                 expressions name exactly one of them"
            )));
        }
        let exists = self
            .trait_definitions()
            .await?
            .iter()
            .any(|d| d.name == name);
        if ObjectKind::Trait.create_taken(name, exists, or_replace, if_not_exists)? {
            return Ok(StatementOutcome::RowsAffected(0));
        }
        self.validate_trait_query(&definition).await?;
        // Evaluate before storing anything: a query that fails at run time creates no trait.
        let evaluated = self.evaluate_trait(&definition).await?;
        self.write_trait_definition(&definition).await?;
        let names = vec![definition.name.clone()];
        let written = self
            .write_trait_values(&names, vec![(definition, evaluated)])
            .await?;
        Ok(StatementOutcome::RowsAffected(written))
    }

    async fn validate_trait_query(&self, definition: &TraitDefinition) -> Result<()> {
        let name = &definition.name;
        let df = self
            .plan_statement_query(&definition.query)
            .await
            .map_err(|e| {
                EngineError::InvalidStatement(format!(
                    "the query of trait '{name}' does not plan: {e}"
                ))
            })?;
        let fields = df.schema().fields();
        let columns: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        if columns.len() != 2 || columns[0] != USER_ID {
            return Err(EngineError::InvalidStatement(format!(
                "the query of trait '{name}' must return user_id and one value column; it returns {}",
                columns.join(", ")
            )));
        }
        let from = fields[1].data_type();
        let to = definition.value_type.data_type();
        if !arrow::compute::can_cast_types(from, &to) || from.is_nested() {
            return Err(EngineError::InvalidStatement(format!(
                "trait '{name}' is {}, but its query's value column {} is {from}, which does not convert",
                definition.value_type, columns[1]
            )));
        }
        Ok(())
    }

    /// Runs a trait's query into keys and typed values.
    async fn evaluate_trait(&self, definition: &TraitDefinition) -> Result<Evaluated> {
        let name = &definition.name;
        let df = self.plan_statement_query(&definition.query).await?;
        let mut stream = df.execute_stream().await?;
        let to = definition.value_type.data_type();
        let strict = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        let (mut keys, mut values): (Vec<ArrayRef>, Vec<ArrayRef>) = (vec![], vec![]);
        let mut seen = RoaringTreemap::new();
        let mut unknown = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_columns() != 2 {
                return Err(EngineError::InvalidStatement(format!(
                    "the query of trait '{name}' no longer returns user_id and a value"
                )));
            }
            let ids = batch.column(0);
            let typed = cast_with_options(batch.column(1), &to, &strict).map_err(|e| {
                EngineError::InvalidStatement(format!(
                    "trait '{name}' is {}: a value of its query does not convert ({e})",
                    definition.value_type
                ))
            })?;
            let found = self.user_keys.lookup(&self.store, ids).await?;
            let mut keep = Vec::with_capacity(found.len());
            for (row, key) in found.iter().enumerate() {
                let has_value = typed.is_valid(row)
                    && !(definition.value_type == TraitType::Double
                        && typed
                            .as_primitive::<arrow::datatypes::Float64Type>()
                            .value(row)
                            .is_nan());
                let Some(key) = key else {
                    unknown += usize::from(ids.is_valid(row) && has_value);
                    keep.push(false);
                    continue;
                };
                if has_value && !seen.insert(*key as u64) {
                    let id = arrow::util::display::array_value_to_string(ids, row)?;
                    return Err(EngineError::InvalidStatement(format!(
                        "the query of trait '{name}' returned more than one value for user_id {id}: \
                         return one row per user (GROUP BY user_id)"
                    )));
                }
                keep.push(has_value);
            }
            let keep = BooleanArray::from(keep);
            let key_array: ArrayRef = Arc::new(Int64Array::from(found));
            keys.push(filter(&key_array, &keep)?);
            values.push(filter(&typed, &keep)?);
        }
        if unknown > 0 {
            tracing::warn!(
                trait_name = %name,
                rows = unknown,
                "trait query returned user ids the store has never seen; they were left out"
            );
        }
        let keys = concat_or_empty(&keys, &DataType::Int64)?;
        Ok(Evaluated {
            keys: keys.as_primitive::<arrow::datatypes::Int64Type>().clone(),
            values: concat_or_empty(&values, &to)?,
        })
    }

    async fn write_trait_definition(&self, definition: &TraitDefinition) -> Result<()> {
        let row = RecordBatch::try_new(
            definitions_schema(),
            vec![
                Arc::new(StringArray::from(vec![definition.name.clone()])),
                Arc::new(StringArray::from(vec![definition.value_type.name()])),
                Arc::new(StringArray::from(vec![definition.query.clone()])),
                Arc::new(StringArray::from(vec![definition.schedule.as_deref()])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![definition.created_at]).with_timezone(UTC),
                ),
            ],
        )?;
        crate::catalog_objects::write_definition(
            &self.store,
            SystemTable::TraitDefinitions,
            definitions_schema(),
            &definition.name,
            row,
        )
        .await
    }

    /// Refreshes one trait now (the scheduler's entry point).
    pub async fn refresh_trait(&self, name: &str) -> Result<u64> {
        let _catalog = self.catalog_lock.lock().await;
        let definition = self.trait_definition(name).await?;
        self.refresh_traits(&[definition]).await
    }

    /// Evaluates every trait, then replaces all their values in one commit.
    async fn refresh_traits(&self, definitions: &[TraitDefinition]) -> Result<u64> {
        let mut evaluated = Vec::with_capacity(definitions.len());
        for definition in definitions {
            let values = self.evaluate_trait(definition).await?;
            evaluated.push((definition.clone(), values));
        }
        let names: Vec<String> = definitions.iter().map(|d| d.name.clone()).collect();
        self.write_trait_values(&names, evaluated).await
    }

    /// One commit replacing the values of `names`; returns the values written.
    async fn write_trait_values(
        &self,
        names: &[String],
        evaluated: Vec<(TraitDefinition, Evaluated)>,
    ) -> Result<u64> {
        if names.is_empty() {
            return Ok(0);
        }
        let refreshed_at = now_micros();
        let schema = values_schema();
        let mut batches = Vec::new();
        for (definition, values) in evaluated {
            let rows = values.keys.len();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![definition.name.as_str(); rows])),
                Arc::new(values.keys),
            ];
            for value_type in TraitType::ALL {
                columns.push(if value_type == definition.value_type {
                    Arc::clone(&values.values)
                } else {
                    new_null_array(&value_type.data_type(), rows)
                });
            }
            columns.push(Arc::new(
                TimestampMicrosecondArray::from(vec![refreshed_at; rows]).with_timezone(UTC),
            ));
            batches.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
        }
        let batch = arrow::compute::concat_batches(&schema, &batches)?;
        let written = batch.num_rows() as u64;
        let refreshed = names.iter().map(|n| lit(n.as_str())).collect();
        let table = self
            .store
            .replace_where(
                SystemTable::TraitValues,
                schema,
                col("trait").in_list(refreshed, false),
                batch,
            )
            .await?;
        tracing::info!(
            traits = names.len(),
            values = written,
            version = table.version().unwrap_or_default(),
            "traits refreshed"
        );
        Ok(written)
    }

    async fn drop_trait(&self, name: &str, if_exists: bool) -> Result<StatementOutcome> {
        let _catalog = self.catalog_lock.lock().await;
        if !self
            .trait_definitions()
            .await?
            .iter()
            .any(|d| d.name == name)
        {
            ObjectKind::Trait.drop_missing(name, if_exists)?;
            return Ok(StatementOutcome::RowsAffected(0));
        }
        // Values first: a crash in between leaves a defined trait with no values, which a
        // REFRESH or another DROP repairs.
        self.store
            .delete_where(SystemTable::TraitValues, "trait", name)
            .await?;
        self.store
            .delete_where(SystemTable::TraitDefinitions, "name", name)
            .await?;
        Ok(StatementOutcome::RowsAffected(1))
    }

    /// Users with a value and the last refresh time of every trait that has values.
    pub(crate) async fn trait_sizes(&self) -> Result<HashMap<String, (i64, Option<i64>)>> {
        let mut sizes: HashMap<String, (i64, Option<i64>)> = HashMap::new();
        if let Some(table) = self.store.latest(SystemTable::TraitValues).await? {
            let batches = crate::store::scan_table(&table)
                .await?
                .aggregate(
                    vec![col("trait")],
                    vec![
                        datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("users"),
                        datafusion::functions_aggregate::expr_fn::max(col("refreshed_at"))
                            .alias("refreshed_at"),
                    ],
                )?
                .collect()
                .await?;
            for batch in &batches {
                let traits = cast(batch.column(0), &DataType::Utf8)?;
                let users = cast(batch.column(1), &DataType::Int64)?;
                let refreshed = cast(batch.column(2), &timestamp_type())?;
                let refreshed =
                    refreshed.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                for (row, name) in traits.as_string::<i32>().iter().enumerate() {
                    if let Some(name) = name {
                        sizes.insert(
                            name.to_string(),
                            (
                                users
                                    .as_primitive::<arrow::datatypes::Int64Type>()
                                    .value(row),
                                refreshed.is_valid(row).then(|| refreshed.value(row)),
                            ),
                        );
                    }
                }
            }
        }
        Ok(sizes)
    }

    /// `SHOW TRAITS`: name, type, schedule, users, refreshed_at, query.
    async fn show_traits(&self) -> Result<DataFrame> {
        let definitions = self.trait_definitions().await?;
        let sizes = self.trait_sizes().await?;
        let size = |d: &TraitDefinition| sizes.get(&d.name).copied().unwrap_or((0, None));
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("schedule", DataType::Utf8, true),
            Field::new("users", DataType::Int64, false),
            Field::new("refreshed_at", timestamp_type(), true),
            Field::new("query", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.value_type.name()),
                )),
                Arc::new(StringArray::from_iter(
                    definitions.iter().map(|d| d.schedule.as_deref()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    definitions.iter().map(|d| size(d).0),
                )),
                Arc::new(
                    definitions
                        .iter()
                        .map(|d| size(d).1)
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone(UTC),
                ),
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.query.as_str()),
                )),
            ],
        )?;
        Ok(SessionContext::new().read_batch(batch)?)
    }

    /// The sorted indexes of `names` in `table` (a version of the values table), built once per
    /// version; a name with no values there is absent from the result.
    pub(crate) async fn trait_indexes(
        &self,
        table: &deltalake::DeltaTable,
        definitions: &[TraitDefinition],
        names: &BTreeSet<String>,
    ) -> Result<HashMap<String, Arc<TraitIndex>>> {
        let version = table.version().unwrap_or_default();
        let mut cache = self.trait_cache.indexes.lock().await;
        let missing: Vec<&TraitDefinition> = definitions
            .iter()
            .filter(|d| names.contains(&d.name))
            .filter(|d| !cache.get(&version).is_some_and(|v| v.contains_key(&d.name)))
            .collect();
        for definition in missing {
            let column = definition.value_type.value_column();
            let batches = crate::store::scan_table(table)
                .await?
                .filter(col("trait").eq(lit(definition.name.as_str())))?
                .select(vec![col(USER_KEY), col(column)])?
                .collect()
                .await?;
            let keys = batches
                .iter()
                .map(|b| cast(b.column(0), &DataType::Int64))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let values = batches
                .iter()
                .map(|b| cast(b.column(1), &definition.value_type.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let index = TraitIndex::build(&definition.name, definition.value_type, &keys, &values)?;
            cache
                .entry(version)
                .or_default()
                .insert(definition.name.clone(), Arc::new(index));
        }
        while cache.len() > CACHED_VERSIONS {
            cache.pop_first();
        }
        Ok(cache
            .get(&version)
            .map(|indexes| {
                names
                    .iter()
                    .filter_map(|n| Some((n.clone(), Arc::clone(indexes.get(n)?))))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn concat_or_empty(arrays: &[ArrayRef], data_type: &DataType) -> Result<ArrayRef> {
    if arrays.is_empty() {
        return Ok(arrow::array::new_empty_array(data_type));
    }
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(arrow::compute::concat(&refs)?)
}

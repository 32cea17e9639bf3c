//! Tags: named, stored user selections, materialised as one roaring bitmap per (tag, value).
//!
//! - `CREATE TAG name AS <query>`: the query returns `user_id` (a boolean tag: the users having
//!   it) or `user_id, value` (a valued tag such as a lifecycle stage: one value per user). The
//!   definition is validated (it must plan and return those columns), stored in the
//!   `_cohort/tag_definitions` Delta table, and refreshed at once.
//! - `REFRESH TAG name` / `REFRESH TAGS` evaluate the queries and replace the tags' bitmaps in
//!   `_cohort/tag_bitmaps` (partitioned by tag) in **one** Delta commit: readers see all the old
//!   bitmaps or all the new ones, and every commit stays in the table's history, which is how
//!   `audience('...', as_of)` answers "who had this tag last week".
//! - `DROP TAG name` removes the bitmaps, then the definition.
//! - `SHOW TAGS` lists definitions with their size and last refresh; the `tags` view lists
//!   every (tag, value) with its user count.
//!
//! Users are stored by `user_key` (see [`crate::user_keys`]); ids a tag query returns that the
//! store has never seen are left out and counted in the log. A tag created `BY PERSON` stores
//! each returned identifier's person instead (its `person_key` at the identity version current
//! when the tag is refreshed), so it counts people, and `audience('tag')` returns each person
//! once, by its key identifier.

pub mod functions;
pub mod resolve;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use cohort_sql_extensions::bitmap::RoaringTreemap;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};
use futures::StreamExt;

use crate::Engine;
use crate::catalog_statement::{CatalogStatement, ObjectKind};
use crate::error::{EngineError, Result};
use crate::outcome::StatementOutcome;
use crate::store::{micros_column, stored_column, text_column};
use crate::tables::{SystemTable, USER_ID, timestamp_type};

/// Tag definitions and decoded bitmaps by Delta table version. A version never changes, so a
/// cached entry is exact; a refresh makes a new version, which is read afresh.
#[derive(Default)]
pub(crate) struct TagCache {
    definitions: crate::catalog_objects::DefinitionCache<TagDefinition>,
    bitmaps: tokio::sync::Mutex<std::collections::BTreeMap<u64, VersionTags>>,
}

/// The tags read from one version: tag -> bitmaps (`None`: no rows for the tag in that version).
type VersionTags = HashMap<String, Option<Arc<resolve::TagBitmaps>>>;

/// Versions of the bitmaps table whose decoded tags stay cached (now, and a few time travels).
const CACHED_VERSIONS: usize = 4;

pub const TAG_BITMAP: &str = "tag_bitmap";
pub const AUDIENCE: &str = "audience";
pub const AUDIENCE_BITMAP: &str = "audience_bitmap";
pub const HAS_TAG: &str = "has_tag";
pub const AUDIENCE_OVERLAP: &str = "audience_overlap";

/// The column of a valued tag's query that holds the value (any name is accepted; this is the
/// name the `tags` view uses).
pub const VALUE: &str = "value";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDefinition {
    pub name: String,
    pub query: String,
    /// Whether the query returns a value per user.
    pub valued: bool,
    /// Cron expression of scheduled refreshes (see `segments::schedule`).
    pub schedule: Option<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Members are persons (`BY PERSON`).
    pub by_person: bool,
}

fn definitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("valued", DataType::Boolean, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("created_at", timestamp_type(), false),
        // Absent from stores written before BY PERSON: read as false.
        Field::new("by_person", DataType::Boolean, true),
    ]))
}

/// The stored bitmaps; also what the `tags` view shows (without the bitmap).
pub fn bitmaps_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("tag", DataType::Utf8, false),
        Field::new(VALUE, DataType::Utf8, true),
        Field::new("users", DataType::Int64, false),
        Field::new("bitmap", DataType::Binary, false),
        Field::new("refreshed_at", timestamp_type(), false),
    ]))
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Engine {
    pub(crate) async fn run_tag_statement(
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
                let outcome = self
                    .create_tag(
                        TagDefinition {
                            name,
                            query,
                            valued: false,
                            schedule,
                            created_at: now_micros(),
                            by_person: options.by_person,
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
                let mut definition = self.tag_definition(&name).await?;
                definition.schedule = schedule;
                self.write_tag_definition(&definition).await?;
                self.scheduler_wake.notify_one();
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Drop {
                name, if_exists, ..
            } => self.drop_tag(&name, if_exists).await,
            CatalogStatement::Show { .. } => Ok(StatementOutcome::Query(self.show_tags().await?)),
            CatalogStatement::Refresh { name, .. } => {
                let _catalog = self.catalog_lock.lock().await;
                let chosen: Vec<TagDefinition> = match name {
                    None => self.tag_definitions().await?.to_vec(),
                    Some(name) => vec![self.tag_definition(&name).await?],
                };
                let written = self.refresh_tags(&chosen).await?;
                Ok(StatementOutcome::RowsAffected(written))
            }
        }
    }

    /// Every tag definition, in name order.
    pub async fn tag_definitions(&self) -> Result<Arc<Vec<TagDefinition>>> {
        self.tag_cache
            .definitions
            .read(&self.store, SystemTable::TagDefinitions, |batches| {
                let mut definitions = Vec::new();
                for batch in batches {
                    let (names, queries, schedules) = (
                        text_column(batch, "name")?,
                        text_column(batch, "query")?,
                        text_column(batch, "schedule")?,
                    );
                    let valued = cast(stored_column(batch, "valued")?, &DataType::Boolean)?;
                    let valued = valued.as_boolean();
                    let created = micros_column(batch, "created_at")?;
                    let by_person = crate::store::added_flag_column(batch, "by_person")?;
                    for (row, by_person) in by_person.into_iter().enumerate() {
                        definitions.push(TagDefinition {
                            name: names.value(row).to_string(),
                            query: queries.value(row).to_string(),
                            valued: valued.value(row),
                            schedule: schedules
                                .is_valid(row)
                                .then(|| schedules.value(row).to_string()),
                            created_at: created.value(row),
                            by_person,
                        });
                    }
                }
                Ok(definitions)
            })
            .await
    }

    async fn tag_definition(&self, name: &str) -> Result<TagDefinition> {
        self.tag_definitions()
            .await?
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| ObjectKind::Tag.unknown(name))
    }

    /// Creates `definition` (whose `valued` the query decides).
    async fn create_tag(
        &self,
        mut definition: TagDefinition,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<StatementOutcome> {
        let _catalog = self.catalog_lock.lock().await;
        let name = definition.name.clone();
        if name == crate::holdouts::HOLDOUT {
            return Err(EngineError::InvalidStatement(
                "'holdout' cannot name a tag: audience expressions read holdout:name as a holdout"
                    .into(),
            ));
        }
        if self
            .trait_definitions()
            .await?
            .iter()
            .any(|d| d.name == name)
        {
            return Err(EngineError::InvalidStatement(format!(
                "'{name}' is already a trait: tags and traits share one namespace, so audience \
                 expressions name exactly one of them"
            )));
        }
        let exists = self.tag_definitions().await?.iter().any(|d| d.name == name);
        if ObjectKind::Tag.create_taken(&name, exists, or_replace, if_not_exists)? {
            return Ok(StatementOutcome::RowsAffected(0));
        }
        definition.valued = self.validate_tag_query(&name, &definition.query).await?;
        // Evaluate before storing anything: a query that fails at run time creates no tag.
        let evaluated = self.evaluate_tag(&definition).await?;
        self.write_tag_definition(&definition).await?;
        let written = self
            .write_bitmaps(
                std::slice::from_ref(&definition.name),
                vec![(definition.clone(), evaluated)],
            )
            .await?;
        Ok(StatementOutcome::RowsAffected(written))
    }

    async fn write_tag_definition(&self, definition: &TagDefinition) -> Result<()> {
        let row = RecordBatch::try_new(
            definitions_schema(),
            vec![
                Arc::new(StringArray::from(vec![definition.name.clone()])),
                Arc::new(StringArray::from(vec![definition.query.clone()])),
                Arc::new(BooleanArray::from(vec![definition.valued])),
                Arc::new(StringArray::from(vec![definition.schedule.as_deref()])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![definition.created_at])
                        .with_timezone(crate::tables::UTC),
                ),
                Arc::new(BooleanArray::from(vec![definition.by_person])),
            ],
        )?;
        crate::catalog_objects::write_definition(
            &self.store,
            SystemTable::TagDefinitions,
            definitions_schema(),
            &definition.name,
            row,
        )
        .await
    }

    /// Refreshes one tag now (the scheduler's entry point).
    pub async fn refresh_tag(&self, name: &str) -> Result<u64> {
        let _catalog = self.catalog_lock.lock().await;
        let definition = self.tag_definition(name).await?;
        self.refresh_tags(&[definition]).await
    }

    /// When each tag was last refreshed, in microseconds.
    pub async fn tag_refresh_times(&self) -> Result<HashMap<String, i64>> {
        let mut times = HashMap::new();
        let Some(table) = self.store.latest(SystemTable::TagBitmaps).await? else {
            return Ok(times);
        };
        let batches = crate::store::scan_table(&table)
            .await?
            .select(vec![col("tag"), col("refreshed_at")])?
            .collect()
            .await?;
        for batch in &batches {
            let tags = cast(batch.column(0), &DataType::Utf8)?;
            let refreshed = cast(batch.column(1), &timestamp_type())?;
            let refreshed = refreshed.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            for (row, tag) in tags.as_string::<i32>().iter().enumerate() {
                if let Some(tag) = tag {
                    let newest = times.entry(tag.to_string()).or_insert(i64::MIN);
                    *newest = (*newest).max(refreshed.value(row));
                }
            }
        }
        Ok(times)
    }

    /// Plans the query and checks its columns; returns whether the tag is valued.
    async fn validate_tag_query(&self, name: &str, query: &str) -> Result<bool> {
        let df = self.plan_statement_query(query).await.map_err(|e| {
            EngineError::InvalidStatement(format!("the query of tag '{name}' does not plan: {e}"))
        })?;
        let schema = df.schema();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let has_user_id = columns.first() == Some(&USER_ID);
        if !has_user_id || columns.len() > 2 {
            return Err(EngineError::InvalidStatement(format!(
                "the query of tag '{name}' must return user_id, optionally followed by one value column; it returns {}",
                columns.join(", ")
            )));
        }
        Ok(columns.len() == 2)
    }

    /// Runs a tag's query: the users of each value (`None` for a boolean tag).
    async fn evaluate_tag(
        &self,
        definition: &TagDefinition,
    ) -> Result<HashMap<Option<String>, RoaringTreemap>> {
        let df = self.plan_statement_query(&definition.query).await?;
        let mut stream = df.execute_stream().await?;
        let mut values: HashMap<Option<String>, RoaringTreemap> = HashMap::new();
        if !definition.valued {
            values.insert(None, RoaringTreemap::new());
        }
        let mut unknown = 0usize;
        let persons = if definition.by_person {
            Some(self.person_map().await?)
        } else {
            None
        };
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let mut keys = self.user_keys.lookup(&self.store, batch.column(0)).await?;
            if let Some(persons) = &persons {
                for key in keys.iter_mut().flatten() {
                    *key = persons.person_of(*key);
                }
            }
            let tag_values = if definition.valued {
                if batch.num_columns() != 2 {
                    return Err(EngineError::InvalidStatement(format!(
                        "the query of tag '{}' no longer returns user_id and a value",
                        definition.name
                    )));
                }
                Some(cast(batch.column(1), &DataType::Utf8)?)
            } else {
                None
            };
            for (row, key) in keys.into_iter().enumerate() {
                let Some(key) = key else {
                    unknown += usize::from(batch.column(0).is_valid(row));
                    continue;
                };
                let value = match &tag_values {
                    None => None,
                    Some(column) => {
                        let column = column.as_string::<i32>();
                        if column.is_null(row) {
                            continue; // no value: the user does not have the tag
                        }
                        Some(column.value(row).to_string())
                    }
                };
                values.entry(value).or_default().insert(key as u64);
            }
        }
        if unknown > 0 {
            tracing::warn!(
                tag = %definition.name,
                rows = unknown,
                "tag query returned user ids the store has never seen; they were left out"
            );
        }
        Ok(values)
    }

    /// Evaluates every tag, then replaces all their bitmaps in one commit.
    async fn refresh_tags(&self, definitions: &[TagDefinition]) -> Result<u64> {
        let mut evaluated = Vec::with_capacity(definitions.len());
        for definition in definitions {
            let values = self.evaluate_tag(definition).await?;
            evaluated.push((definition.clone(), values));
        }
        let names: Vec<String> = definitions.iter().map(|d| d.name.clone()).collect();
        self.write_bitmaps(&names, evaluated).await
    }

    /// One commit replacing the bitmaps of `names` with `evaluated`; returns the users tagged
    /// (per tag, those with any value, summed over the tags) like a segment run counts members.
    async fn write_bitmaps(
        &self,
        names: &[String],
        evaluated: Vec<(TagDefinition, HashMap<Option<String>, RoaringTreemap>)>,
    ) -> Result<u64> {
        if names.is_empty() {
            return Ok(0);
        }
        let refreshed_at = now_micros();
        let (mut tags, mut values, mut users, mut bitmaps) = (vec![], vec![], vec![], vec![]);
        let mut tagged = 0;
        for (definition, tag_values) in evaluated {
            let with_any_value = tag_values
                .values()
                .fold(RoaringTreemap::new(), |union, users| union | users);
            tagged += with_any_value.len();
            let mut sorted: Vec<_> = tag_values.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for (value, bitmap) in sorted {
                tags.push(definition.name.clone());
                values.push(value);
                users.push(bitmap.len() as i64);
                bitmaps.push(cohort_sql_extensions::bitmap::encode(&bitmap));
            }
        }
        let rows = tags.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(tags)),
            Arc::new(StringArray::from(values)),
            Arc::new(Int64Array::from(users)),
            Arc::new(BinaryArray::from_iter_values(bitmaps)),
            Arc::new(
                TimestampMicrosecondArray::from(vec![refreshed_at; rows])
                    .with_timezone(crate::tables::UTC),
            ),
        ];
        let batch = RecordBatch::try_new(bitmaps_schema(), columns)?;
        let refreshed = names.iter().map(|n| lit(n.as_str())).collect();
        let table = self
            .store
            .replace_where(
                SystemTable::TagBitmaps,
                bitmaps_schema(),
                col("tag").in_list(refreshed, false),
                batch,
            )
            .await?;
        tracing::info!(
            tags = names.len(),
            bitmaps = rows,
            users = tagged,
            version = table.version().unwrap_or_default(),
            "tags refreshed"
        );
        Ok(tagged)
    }

    async fn drop_tag(&self, name: &str, if_exists: bool) -> Result<StatementOutcome> {
        let _catalog = self.catalog_lock.lock().await;
        if !self.tag_definitions().await?.iter().any(|d| d.name == name) {
            ObjectKind::Tag.drop_missing(name, if_exists)?;
            return Ok(StatementOutcome::RowsAffected(0));
        }
        // Bitmaps first: a crash in between leaves a defined tag with no users, which a
        // REFRESH or another DROP repairs, never bitmaps of a tag nobody can see.
        self.store
            .delete_where(SystemTable::TagBitmaps, "tag", name)
            .await?;
        self.store
            .delete_where(SystemTable::TagDefinitions, "name", name)
            .await?;
        Ok(StatementOutcome::RowsAffected(1))
    }

    /// `SHOW TAGS`: name, kind, schedule, values, users, refreshed_at, query.
    async fn show_tags(&self) -> Result<DataFrame> {
        let definitions = self.tag_definitions().await?;
        let mut sizes: HashMap<String, (i64, i64, Option<i64>)> = HashMap::new();
        if let Some(table) = self.store.latest(SystemTable::TagBitmaps).await? {
            let batches = crate::store::scan_table(&table)
                .await?
                .select(vec![
                    col("tag"),
                    col(VALUE),
                    col("users"),
                    col("refreshed_at"),
                ])?
                .collect()
                .await?;
            for batch in &batches {
                let tags = cast(batch.column(0), &DataType::Utf8)?;
                let tags = tags.as_string::<i32>();
                let users = cast(batch.column(2), &DataType::Int64)?;
                let users = users.as_primitive::<arrow::datatypes::Int64Type>();
                let refreshed = cast(batch.column(3), &timestamp_type())?;
                let refreshed =
                    refreshed.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                for row in 0..batch.num_rows() {
                    let entry = sizes.entry(tags.value(row).to_string()).or_default();
                    entry.0 += i64::from(batch.column(1).is_valid(row));
                    entry.1 += users.value(row);
                    entry.2 = entry.2.max(Some(refreshed.value(row)));
                }
            }
        }
        let size = |d: &TagDefinition| sizes.get(&d.name).copied().unwrap_or_default();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("members", DataType::Utf8, false),
            Field::new("schedule", DataType::Utf8, true),
            Field::new("values", DataType::Int64, true),
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
                    definitions
                        .iter()
                        .map(|d| if d.valued { "valued" } else { "boolean" }),
                )),
                Arc::new(StringArray::from_iter_values(
                    definitions
                        .iter()
                        .map(|d| if d.by_person { "persons" } else { "users" }),
                )),
                Arc::new(StringArray::from_iter(
                    definitions.iter().map(|d| d.schedule.as_deref()),
                )),
                // A boolean tag has users but no values.
                Arc::new(Int64Array::from_iter(
                    definitions.iter().map(|d| d.valued.then(|| size(d).0)),
                )),
                Arc::new(Int64Array::from_iter_values(
                    definitions.iter().map(|d| size(d).1),
                )),
                Arc::new(
                    definitions
                        .iter()
                        .map(|d| size(d).2)
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone(crate::tables::UTC),
                ),
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.query.as_str()),
                )),
            ],
        )?;
        Ok(SessionContext::new().read_batch(batch)?)
    }
}

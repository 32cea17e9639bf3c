//! Holdouts: a fixed share of all users kept out of every campaign that subtracts it.
//!
//! `CREATE HOLDOUT name PERCENT p [SEED 'text']` stores the definition (`_cohort/holdout_definitions`);
//! audience expressions use it as `holdout:name` (`audience('vip - holdout:global')`). A user is
//! in the holdout when their `split_bucket(user_key, seed)` is below `p` percent of the
//! buckets (the seed defaults to the holdout's name), so membership is a pure function of the
//! user: stable for the life of the holdout, including users who arrive later, and independent
//! of any segment split with another seed. `SHOW HOLDOUTS` lists them with their current size;
//! `DROP HOLDOUT name` removes one.

use std::sync::Arc;

use arrow::array::{
    Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use cohort_sql_extensions::bitmap::RoaringTreemap;
use cohort_sql_extensions::split::{BUCKETS, bucket};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col};

use crate::Engine;
use crate::catalog_statement::{CatalogStatement, ObjectKind};
use crate::error::{EngineError, Result};
use crate::outcome::StatementOutcome;
use crate::store::{micros_column, text_column};
use crate::tables::{SystemTable, UTC, timestamp_type};

/// The tag name audience expressions reserve for holdouts: `holdout:name`.
pub const HOLDOUT: &str = "holdout";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldoutDefinition {
    pub name: String,
    /// Buckets (of [`BUCKETS`]) held out.
    pub buckets: u32,
    pub seed: String,
    pub created_at: i64,
}

impl HoldoutDefinition {
    pub fn contains(&self, key: u64) -> bool {
        bucket(&self.seed, key) < self.buckets
    }
}

fn definitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("buckets", DataType::Int64, false),
        Field::new("seed", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
    ]))
}

impl Engine {
    pub(crate) async fn run_holdout_statement(
        &self,
        statement: CatalogStatement,
    ) -> Result<StatementOutcome> {
        match statement {
            misrouted @ CatalogStatement::Identity(_) => Err(misrouted.misrouted()),
            CatalogStatement::Create {
                name,
                options,
                or_replace,
                if_not_exists,
                ..
            } => {
                let _catalog = self.catalog_lock.lock().await;
                let exists = self
                    .holdout_definitions()
                    .await?
                    .iter()
                    .any(|d| d.name == name);
                if ObjectKind::Holdout.create_taken(&name, exists, or_replace, if_not_exists)? {
                    return Ok(StatementOutcome::RowsAffected(0));
                }
                let definition = HoldoutDefinition {
                    seed: options.seed.unwrap_or_else(|| name.clone()),
                    name,
                    buckets: options.percent.unwrap_or_default(),
                    created_at: chrono::Utc::now().timestamp_micros(),
                };
                self.write_holdout_definition(&definition).await?;
                let users = self.holdout_users(&definition).await?;
                Ok(StatementOutcome::RowsAffected(users.len()))
            }
            CatalogStatement::Drop {
                name, if_exists, ..
            } => {
                let _catalog = self.catalog_lock.lock().await;
                if !self
                    .holdout_definitions()
                    .await?
                    .iter()
                    .any(|d| d.name == name)
                {
                    ObjectKind::Holdout.drop_missing(&name, if_exists)?;
                    return Ok(StatementOutcome::RowsAffected(0));
                }
                self.store
                    .delete_where(SystemTable::HoldoutDefinitions, "name", &name)
                    .await?;
                Ok(StatementOutcome::RowsAffected(1))
            }
            CatalogStatement::Show { .. } => {
                Ok(StatementOutcome::Query(self.show_holdouts().await?))
            }
            CatalogStatement::AlterSchedule { .. } | CatalogStatement::Refresh { .. } => {
                Err(EngineError::InvalidStatement(
                    "a holdout has no query to refresh or schedule: its members follow from the \
                     user keys (CREATE OR REPLACE HOLDOUT changes its share)"
                        .into(),
                ))
            }
        }
    }

    pub async fn holdout_definitions(&self) -> Result<Vec<HoldoutDefinition>> {
        let Some(table) = self.store.latest(SystemTable::HoldoutDefinitions).await? else {
            return Ok(Vec::new());
        };
        let batches = crate::store::scan_table(&table)
            .await?
            .sort(vec![col("name").sort(true, false)])?
            .collect()
            .await?;
        let mut definitions = Vec::new();
        for batch in &batches {
            let (names, seeds) = (text_column(batch, "name")?, text_column(batch, "seed")?);
            let buckets = cast(
                batch.column(batch.schema().index_of("buckets")?),
                &DataType::Int64,
            )?;
            let buckets = buckets
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64");
            let created = micros_column(batch, "created_at")?;
            for row in 0..batch.num_rows() {
                definitions.push(HoldoutDefinition {
                    name: names.value(row).to_string(),
                    buckets: buckets.value(row).clamp(0, i64::from(BUCKETS)) as u32,
                    seed: seeds.value(row).to_string(),
                    created_at: created.value(row),
                });
            }
        }
        Ok(definitions)
    }

    async fn write_holdout_definition(&self, definition: &HoldoutDefinition) -> Result<()> {
        let row = RecordBatch::try_new(
            definitions_schema(),
            vec![
                Arc::new(StringArray::from(vec![definition.name.clone()])),
                Arc::new(Int64Array::from(vec![i64::from(definition.buckets)])),
                Arc::new(StringArray::from(vec![definition.seed.clone()])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![definition.created_at]).with_timezone(UTC),
                ),
            ],
        )?;
        crate::catalog_objects::write_definition(
            &self.store,
            SystemTable::HoldoutDefinitions,
            definitions_schema(),
            &definition.name,
            row,
        )
        .await
    }

    /// The users the store knows now who are in the holdout.
    pub(crate) async fn holdout_users(
        &self,
        definition: &HoldoutDefinition,
    ) -> Result<RoaringTreemap> {
        let keys = self.user_keys.all_keys(&self.store).await?;
        Ok(keys
            .into_iter()
            .filter(|&key| definition.contains(key))
            .collect())
    }

    /// `SHOW HOLDOUTS`: name, percent, seed, users, created_at.
    async fn show_holdouts(&self) -> Result<DataFrame> {
        let definitions = self.holdout_definitions().await?;
        let mut users = Vec::with_capacity(definitions.len());
        for definition in &definitions {
            users.push(self.holdout_users(definition).await?.len() as i64);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("percent", DataType::Float64, false),
            Field::new("seed", DataType::Utf8, false),
            Field::new("users", DataType::Int64, false),
            Field::new("created_at", timestamp_type(), false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.name.as_str()),
                )),
                Arc::new(Float64Array::from_iter_values(
                    definitions.iter().map(|d| f64::from(d.buckets) / 100.0),
                )),
                Arc::new(StringArray::from_iter_values(
                    definitions.iter().map(|d| d.seed.as_str()),
                )),
                Arc::new(Int64Array::from(users)),
                Arc::new(
                    definitions
                        .iter()
                        .map(|d| Some(d.created_at))
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone(UTC),
                ),
            ],
        )?;
        Ok(SessionContext::new().read_batch(batch)?)
    }
}

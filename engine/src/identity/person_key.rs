//! `person_key` on `events` and `profiles`: each row's person at the identity version the
//! session was planned at, so `GROUP BY person_key` counts people instead of identifiers.
//!
//! The column is computed, never stored: [`WithPersonKey`] scans the table with its
//! `user_key` and maps it through the [`PersonMap`] of that version (a dense array, loaded
//! once per version and only when a query asks for the column). Before identity was ever
//! resolved, and for identifiers newer than the last refresh, a person is its identifier alone
//! and `person_key` equals `user_key`.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use async_trait::async_trait;
use cohort_sql_extensions::bitmap::RoaringTreemap;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{ColumnStatistics, Constraints, Statistics, plan_err};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, TableType, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use deltalake::DeltaTable;

use crate::error::{EngineError, Result};
use crate::tables::{PERSON_KEY, USER_KEY};

/// `user_key -> person_key` of one identity version, or of the members of one segment version.
#[derive(Debug, Default)]
pub struct PersonMap {
    /// The `_cohort/identity_persons` version; `None` before the first refresh and for a
    /// segment's members.
    version: Option<u64>,
    persons: Lookup,
}

/// Only identifiers whose person is another identifier are listed; the rest are their own.
#[derive(Debug)]
enum Lookup {
    /// Indexed by user key: a whole identity version.
    Dense(Vec<i64>),
    /// `(user_key, person_key)` sorted by user key: the few identifiers of a segment.
    Sparse(Vec<(i64, i64)>),
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup::Dense(Vec::new())
    }
}

impl PersonMap {
    pub fn person_of(&self, key: i64) -> i64 {
        match &self.persons {
            Lookup::Dense(persons) => usize::try_from(key)
                .ok()
                .and_then(|k| persons.get(k).copied())
                .unwrap_or(key),
            Lookup::Sparse(pairs) => match pairs.binary_search_by_key(&key, |(k, _)| *k) {
                Ok(at) => pairs[at].1,
                Err(_) => key,
            },
        }
    }

    /// The identity version this map is of (`None`: never refreshed, or a segment's members).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Whether every identifier is its own person.
    pub fn is_identity(&self) -> bool {
        match &self.persons {
            Lookup::Dense(persons) => persons.is_empty(),
            Lookup::Sparse(pairs) => pairs.is_empty(),
        }
    }

    /// The map of a segment version's members (`pairs` as [`PersonMap::members`] gives them).
    pub fn from_pairs(mut pairs: Vec<(i64, i64)>) -> Self {
        pairs.sort_unstable();
        PersonMap {
            version: None,
            persons: Lookup::Sparse(pairs),
        }
    }

    /// Every identifier whose person is in `persons` (a person's key is one of its
    /// identifiers), and those among them whose person is another identifier, as
    /// `(user_key, person_key)` sorted by user key. One pass over the map.
    pub fn members(&self, persons: &RoaringTreemap) -> (RoaringTreemap, Vec<(i64, i64)>) {
        let mut identifiers = persons.clone();
        let mut moved = Vec::new();
        let mut add = |key: i64, person: i64| {
            if key != person && persons.contains(person as u64) {
                identifiers.insert(key as u64);
                moved.push((key, person));
            }
        };
        match &self.persons {
            Lookup::Dense(map) => {
                for (key, person) in map.iter().enumerate() {
                    add(key as i64, *person);
                }
            }
            Lookup::Sparse(pairs) => {
                for (key, person) in pairs {
                    add(*key, *person);
                }
            }
        }
        (identifiers, moved)
    }
}

/// `user_key` of each row mapped to its person through `map` (for plans over user keys).
pub(crate) fn person_key_of(map: Arc<PersonMap>, user_key: Expr) -> Expr {
    ScalarUDF::from(PersonKeyOf { map }).call(vec![user_key])
}

/// The person map of the newest version read, shared by the engine and its sessions.
#[derive(Clone, Default)]
pub(crate) struct PersonMapCache(Arc<tokio::sync::Mutex<Option<Arc<PersonMap>>>>);

impl PersonMapCache {
    /// The map of `table` (a version of `_cohort/identity_persons`; `None`: never refreshed).
    pub async fn get(&self, table: Option<&DeltaTable>) -> Result<Arc<PersonMap>> {
        let Some(table) = table else {
            return Ok(Arc::default());
        };
        let mut cached = self.0.lock().await;
        if let Some(map) = cached.as_ref()
            && map.version == table.version()
        {
            return Ok(Arc::clone(map));
        }
        let batches = crate::store::scan_table(table).await?.collect().await?;
        let mut moved: Vec<(i64, i64)> = Vec::new();
        for batch in &batches {
            let keys = key_column(batch, USER_KEY)?;
            let persons = key_column(batch, PERSON_KEY)?;
            moved.extend(
                keys.values()
                    .iter()
                    .copied()
                    .zip(persons.values().iter().copied()),
            );
        }
        let size = moved.iter().map(|(k, _)| *k + 1).max().unwrap_or(0);
        let mut persons: Vec<i64> = (0..size).collect();
        for (key, person) in moved {
            if key >= 0 {
                persons[key as usize] = person;
            }
        }
        let map = Arc::new(PersonMap {
            version: table.version(),
            persons: Lookup::Dense(persons),
        });
        *cached = Some(Arc::clone(&map));
        Ok(map)
    }
}

fn key_column(batch: &arrow::record_batch::RecordBatch, name: &str) -> Result<Int64Array> {
    let column = crate::store::int64_column(batch, name)?;
    if column.null_count() > 0 {
        return Err(EngineError::Corrupt(format!(
            "_cohort/identity_persons holds a NULL {name}"
        )));
    }
    Ok(column)
}

/// Where a session's scans find the person map: one identity version, fixed at planning.
#[derive(Clone)]
pub(crate) struct PersonSource {
    pub table: Option<DeltaTable>,
    pub cache: PersonMapCache,
}

/// A table with `person_key` right after its `user_key`.
#[derive(Debug)]
pub struct WithPersonKey {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    /// Position of `user_key` in the inner schema.
    user_key: usize,
    source: PersonSource,
}

impl std::fmt::Debug for PersonSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonSource")
            .field("version", &self.table.as_ref().and_then(|t| t.version()))
            .finish()
    }
}

impl WithPersonKey {
    /// `inner` with `person_key`, or `inner` unchanged if it has no `user_key`.
    pub(crate) fn wrap(
        inner: Arc<dyn TableProvider>,
        source: PersonSource,
    ) -> Arc<dyn TableProvider> {
        let schema = inner.schema();
        let Ok(user_key) = schema.index_of(USER_KEY) else {
            return inner;
        };
        if schema.index_of(PERSON_KEY).is_ok() {
            return inner;
        }
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.insert(
            user_key + 1,
            Field::new(
                PERSON_KEY,
                DataType::Int64,
                schema.field(user_key).is_nullable(),
            ),
        );
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        Arc::new(WithPersonKey {
            inner,
            schema,
            user_key,
            source,
        })
    }

    fn person_column(&self) -> usize {
        self.user_key + 1
    }

    /// The inner column of an outer one other than `person_key`.
    fn inner_column(&self, outer: usize) -> usize {
        if outer > self.person_column() {
            outer - 1
        } else {
            outer
        }
    }

    fn names_person_key(expr: &Expr) -> bool {
        expr.column_refs().iter().any(|c| c.name == PERSON_KEY)
    }
}

#[async_trait]
impl TableProvider for WithPersonKey {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        self.inner.get_logical_plan()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(Vec::as_slice))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> DfResult<ScanResult> {
        let person = self.person_column();
        let wanted: Vec<usize> = match args.projection() {
            Some(projection) => projection.to_vec(),
            None => (0..self.schema.fields().len()).collect(),
        };
        if !wanted.contains(&person) {
            let inner: Vec<usize> = wanted.iter().map(|&i| self.inner_column(i)).collect();
            let inner_args = ScanArgs::default()
                .with_projection(Some(&inner))
                .with_filters(args.filters())
                .with_limit(args.limit());
            return self.inner.scan_with_args(state, inner_args).await;
        }
        let mut inner_projection: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| i != person)
            .map(|i| self.inner_column(i))
            .chain([self.user_key])
            .collect();
        inner_projection.sort_unstable();
        inner_projection.dedup();
        let inner_args = ScanArgs::default()
            .with_projection(Some(&inner_projection))
            .with_filters(args.filters())
            .with_limit(args.limit());
        let plan = self
            .inner
            .scan_with_args(state, inner_args)
            .await?
            .into_inner();
        let scanned = plan.schema();
        let column = |inner: usize| -> Arc<dyn PhysicalExpr> {
            let position = inner_projection
                .binary_search(&inner)
                .expect("every wanted column was scanned");
            Arc::new(Column::new(scanned.field(position).name(), position))
        };
        let map = self
            .source
            .cache
            .get(self.source.table.as_ref())
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let user_key = column(self.user_key);
        let person_expr: Arc<dyn PhysicalExpr> = if map.is_identity() {
            user_key
        } else {
            Arc::new(ScalarFunctionExpr::try_new(
                Arc::new(ScalarUDF::from(PersonKeyOf { map })),
                vec![user_key],
                &scanned,
                Arc::new(state.config_options().clone()),
            )?)
        };
        let columns = wanted.iter().map(|&i| {
            if i == person {
                (Arc::clone(&person_expr), PERSON_KEY.to_string())
            } else {
                (
                    column(self.inner_column(i)),
                    self.schema.field(i).name().clone(),
                )
            }
        });
        Ok((Arc::new(ProjectionExec::try_new(columns, plan)?) as Arc<dyn ExecutionPlan>).into())
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let inner: Vec<&Expr> = filters
            .iter()
            .copied()
            .filter(|f| !Self::names_person_key(f))
            .collect();
        let mut answers = self.inner.supports_filters_pushdown(&inner)?.into_iter();
        Ok(filters
            .iter()
            .map(|f| {
                if Self::names_person_key(f) {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    answers
                        .next()
                        .unwrap_or(TableProviderFilterPushDown::Unsupported)
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        let mut statistics = self.inner.statistics()?;
        if statistics.column_statistics.len() + 1 != self.schema.fields().len() {
            return None;
        }
        statistics
            .column_statistics
            .insert(self.person_column(), ColumnStatistics::new_unknown());
        Some(statistics)
    }
}

/// `user_key -> person_key` through one version's map (planned by [`WithPersonKey`] only).
#[derive(Debug)]
struct PersonKeyOf {
    map: Arc<PersonMap>,
}

impl PartialEq for PersonKeyOf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.map, &other.map)
    }
}

impl Eq for PersonKeyOf {}

impl Hash for PersonKeyOf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.map.version.hash(state);
    }
}

static PERSON_KEY_SIGNATURE: std::sync::LazyLock<Signature> =
    std::sync::LazyLock::new(|| Signature::exact(vec![DataType::Int64], Volatility::Immutable));

impl ScalarUDFImpl for PersonKeyOf {
    fn name(&self) -> &str {
        "person_key_of"
    }

    fn signature(&self) -> &Signature {
        &PERSON_KEY_SIGNATURE
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types {
            [DataType::Int64] => Ok(DataType::Int64),
            other => plan_err!("person_key_of takes a user_key (Int64), got {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let keys = match &args.args[..] {
            [ColumnarValue::Array(keys)] => Arc::clone(keys),
            [ColumnarValue::Scalar(key)] => key.to_array()?,
            _ => return plan_err!("person_key_of takes one argument"),
        };
        let keys = keys.as_primitive::<Int64Type>();
        let persons: Int64Array = keys.unary(|key| self.map.person_of(key));
        Ok(ColumnarValue::Array(Arc::new(persons)))
    }
}

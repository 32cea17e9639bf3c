//! Loading the tag bitmaps a statement uses, before it is planned.
//!
//! Tag functions take constant arguments (a tag name, a tag expression, a point in time), so the
//! bitmaps they need are known from the statement's text. They are read from the store once,
//! asynchronously, and handed to the functions, which then plan into constant bitmaps: nothing
//! reads the store while a plan executes, and a distributed plan carries the bitmaps with it.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use cohort_sql_extensions::bitmap::RoaringTreemap;
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, TableFactor, Value, Visit,
    Visitor,
};

use cohort_sql_extensions::bitmap::expression::{TagExpr, Term};
use datafusion::catalog::TableProvider;

use super::{AUDIENCE, AUDIENCE_BITMAP, AUDIENCE_OVERLAP, HAS_TAG, TAG_BITMAP};
use crate::Engine;
use crate::error::{EngineError, Result};
use crate::holdouts::HOLDOUT;
use crate::tables::SystemTable;
use crate::traits::index::TraitIndex;

/// A point in time of the tag history, in microseconds since the epoch; `None` is now.
pub type AsOf = Option<i64>;

/// The tags (and traits) each point in time of a statement refers to, and what else its
/// catalog functions need read before planning.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TagRequests {
    /// Names of tags and traits (audience terms name either).
    pub tags: HashMap<AsOf, BTreeSet<String>>,
    /// Segments named by `segment_members` / `segment_changes`.
    pub segments: BTreeSet<String>,
    /// Holdouts named as `holdout:name`.
    pub holdouts: BTreeSet<String>,
    /// Points in time `trait('name', as_of)` reads.
    pub trait_times: BTreeSet<i64>,
}

impl TagRequests {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.holdouts.is_empty() && self.trait_times.is_empty()
    }

    /// Every constant tag reference in `statement`. Arguments that are not constants are left
    /// for the functions to reject when the statement is planned.
    pub fn collect(statement: &DFStatement) -> Result<Self> {
        let mut collector = Collector::default();
        match statement {
            DFStatement::Statement(inner) => {
                let _ = inner.visit(&mut collector);
            }
            DFStatement::Explain(explain) => return Self::collect(&explain.statement),
            _ => {}
        }
        match collector.error {
            Some(error) => Err(error),
            None => Ok(collector.requests),
        }
    }

    fn add(&mut self, as_of: AsOf, tags: impl IntoIterator<Item = String>) {
        self.tags.entry(as_of).or_default().extend(tags);
    }

    /// The names an audience expression refers to.
    fn add_expression(&mut self, as_of: AsOf, expression: &TagExpr) {
        for term in expression.terms() {
            match term {
                Term::Tag {
                    name,
                    value: Some(holdout),
                } if name.eq_ignore_ascii_case(HOLDOUT) => {
                    self.holdouts.insert(holdout.to_lowercase());
                }
                other => self.add(as_of, [other.name().to_lowercase()]),
            }
        }
    }
}

#[derive(Default)]
struct Collector {
    requests: TagRequests,
    error: Option<EngineError>,
}

impl Collector {
    fn call(&mut self, name: &str, args: &[FunctionArg]) -> Result<()> {
        let constant = |i: usize| args.get(i).and_then(constant_text);
        match name.to_ascii_lowercase().as_str() {
            TAG_BITMAP => {
                if let Some(tag) = constant(0) {
                    self.requests.add(None, [tag.to_lowercase()]);
                }
            }
            HAS_TAG => {
                if let Some(tag) = constant(1) {
                    self.requests.add(None, [tag.to_lowercase()]);
                }
            }
            AUDIENCE | AUDIENCE_BITMAP => {
                // The bitmaps are read before planning, at the times written in the statement:
                // an expression (now() - INTERVAL '7 days') has no value yet.
                if args.len() > 1 && constant(1).is_none() {
                    return Err(EngineError::InvalidStatement(format!(
                        "the point in time of {} must be a literal, e.g. TIMESTAMP '2026-11-16 09:00:00' \
                         or '2026-11-16', not an expression such as now()",
                        name.to_ascii_lowercase()
                    )));
                }
                if let Some(text) = constant(0) {
                    let expr = TagExpr::parse(&text)?;
                    let as_of = match constant(1) {
                        Some(at) => Some(parse_as_of(&at)?),
                        None => None,
                    };
                    self.requests.add_expression(as_of, &expr);
                }
            }
            AUDIENCE_OVERLAP => {
                for text in args.iter().filter_map(constant_text) {
                    self.requests.add_expression(None, &TagExpr::parse(&text)?);
                }
            }
            crate::traits::TRAIT => {
                if let Some(at) = constant(1) {
                    self.requests.trait_times.insert(parse_as_of(&at)?);
                }
            }
            crate::segments::SEGMENT_MEMBERS | crate::segments::SEGMENT_CHANGES => {
                if let Some(segment) = constant(0) {
                    self.requests.segments.insert(segment.to_lowercase());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Function(function) = expr
            && let FunctionArguments::List(list) = &function.args
            && let Some(name) = function.name.0.last()
            && let Err(e) = self.call(&name.to_string(), &list.args)
        {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
            && let Some(last) = name.0.last()
            && let Err(e) = self.call(&last.to_string(), &args.args)
        {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// A string literal or a typed literal such as `TIMESTAMP '2026-11-16'`.
fn constant_text(arg: &FunctionArg) -> Option<String> {
    let FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) = arg else {
        return None;
    };
    match expr {
        SqlExpr::Value(value) => string_value(&value.value),
        SqlExpr::TypedString(typed) => string_value(&typed.value.value),
        _ => None,
    }
}

fn string_value(value: &Value) -> Option<String> {
    match value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A point in time written as text: RFC 3339, or a date / date-time without zone taken as UTC.
pub fn parse_as_of(text: &str) -> Result<i64> {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text.trim())
        .map(|nanos| nanos.div_euclid(1000))
        .map_err(|_| {
            EngineError::InvalidStatement(format!(
                "'{text}' is not a point in time: use e.g. '2026-11-16' or '2026-11-16T09:00:00Z'"
            ))
        })
}

/// A constant argument (as the planner passes it) as a point in time.
pub fn scalar_as_of(value: &ScalarValue) -> Result<i64> {
    let invalid = || {
        EngineError::InvalidStatement(format!(
            "{value} is not a point in time: pass a timestamp or a date-time string"
        ))
    };
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => parse_as_of(s),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000).ok_or_else(invalid),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1000).ok_or_else(invalid),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Ok(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Ok(v.div_euclid(1000)),
        ScalarValue::Date32(Some(days)) => Ok(i64::from(*days) * 86_400_000_000),
        _ => Err(invalid()),
    }
}

/// One tag's bitmaps at one point in time.
#[derive(Debug, Default, Clone)]
pub struct TagBitmaps {
    pub valued: bool,
    pub values: HashMap<Option<String>, RoaringTreemap>,
}

impl TagBitmaps {
    /// The users having the tag, or (for `Some(value)`) that value of it.
    pub fn users(&self, tag: &str, value: Option<&str>) -> Result<RoaringTreemap> {
        match value {
            None => {
                let mut all = RoaringTreemap::new();
                for bitmap in self.values.values() {
                    all |= bitmap;
                }
                Ok(all)
            }
            Some(_) if !self.valued => Err(EngineError::InvalidStatement(format!(
                "tag '{tag}' has no values: write '{tag}' rather than '{tag}:...'"
            ))),
            // A value nobody has (yet) selects nobody.
            Some(value) => Ok(self
                .values
                .get(&Some(value.to_string()))
                .cloned()
                .unwrap_or_default()),
        }
    }
}

/// The bitmaps a statement's tag functions use, and the trait indexes, holdouts and trait
/// tables its audience and trait functions use.
#[derive(Debug, Default)]
pub struct ResolvedTags {
    pub at: HashMap<AsOf, HashMap<String, Arc<TagBitmaps>>>,
    pub traits: HashMap<AsOf, HashMap<String, Arc<TraitIndex>>>,
    pub holdouts: HashMap<String, Arc<RoaringTreemap>>,
    /// `_cohort/trait_values` at the points in time `trait('name', as_of)` reads.
    pub trait_tables: HashMap<i64, Arc<dyn TableProvider>>,
}

fn not_loaded(name: &str) -> EngineError {
    EngineError::InvalidStatement(format!(
        "tag '{name}' is not loaded: tag names and expressions must be constant strings"
    ))
}

impl ResolvedTags {
    pub fn users(&self, as_of: AsOf, tag: &str, value: Option<&str>) -> Result<RoaringTreemap> {
        let tag = tag.to_lowercase();
        let found = self.at.get(&as_of).and_then(|tags| tags.get(&tag));
        match found {
            Some(bitmaps) => bitmaps.users(&tag, value),
            None if self.trait_index(as_of, &tag).is_some() => {
                Err(EngineError::InvalidStatement(format!(
                    "'{tag}' is a trait: has_tag and tag_bitmap take tags; select by a trait \
                     with audience_bitmap('{tag} >= ...')"
                )))
            }
            None => Err(not_loaded(&tag)),
        }
    }

    fn trait_index(&self, as_of: AsOf, name: &str) -> Option<&Arc<TraitIndex>> {
        self.traits.get(&as_of).and_then(|traits| traits.get(name))
    }

    /// The users one term of an audience expression selects.
    fn term_users(&self, as_of: AsOf, term: &Term) -> Result<RoaringTreemap> {
        let name = term.name().to_lowercase();
        if let Term::Tag {
            value: Some(holdout),
            ..
        } = term
            && name == HOLDOUT
        {
            return self
                .holdouts
                .get(&holdout.to_lowercase())
                .map(|users| users.as_ref().clone())
                .ok_or_else(|| crate::catalog_statement::ObjectKind::Holdout.unknown(holdout));
        }
        let is_tag = self
            .at
            .get(&as_of)
            .is_some_and(|tags| tags.contains_key(&name));
        match (term, self.trait_index(as_of, &name)) {
            (Term::Tag { value, .. }, _) if is_tag => self.users(as_of, &name, value.as_deref()),
            (_, None) if is_tag => Err(EngineError::InvalidStatement(format!(
                "'{name}' is a tag: comparisons and intervals apply to traits (SHOW TRAITS)"
            ))),
            (Term::Tag { value: None, .. }, Some(index)) => index.named(),
            (Term::Tag { value: Some(v), .. }, Some(index)) => index.select(&[(
                std::ops::Bound::Included(v.clone()),
                std::ops::Bound::Included(v.clone()),
            )]),
            (_, Some(index)) => index.select(&term.ranges().unwrap_or_default()),
            (_, None) => Err(not_loaded(&name)),
        }
    }

    pub fn evaluate(&self, as_of: AsOf, expression: &TagExpr) -> Result<RoaringTreemap> {
        let mut failure = None;
        let result = expression.evaluate(&mut |term| {
            self.term_users(as_of, term).map_err(|e| {
                let message = e.to_string();
                failure = Some(e);
                datafusion::error::DataFusionError::Plan(message)
            })
        });
        match (result, failure) {
            (Ok(bitmap), _) => Ok(bitmap),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
        }
    }
}

/// Tag names with no bitmaps remembered per cached table version.
const MAX_CACHED_ABSENT_TAGS: usize = 1024;

impl Engine {
    /// Reads the bitmaps of every requested tag, the indexes of every requested trait, the
    /// members of every requested holdout; an unknown name is an error naming it.
    pub(crate) async fn resolve_tags(&self, requests: &TagRequests) -> Result<ResolvedTags> {
        let mut resolved = ResolvedTags::default();
        if requests.is_empty() {
            return Ok(resolved);
        }
        if !requests.holdouts.is_empty() {
            let holdouts = self.holdout_definitions().await?;
            for name in &requests.holdouts {
                let definition = holdouts
                    .iter()
                    .find(|d| &d.name == name)
                    .ok_or_else(|| crate::catalog_statement::ObjectKind::Holdout.unknown(name))?;
                resolved.holdouts.insert(
                    name.clone(),
                    Arc::new(self.holdout_users(definition).await?),
                );
            }
        }
        for micros in &requests.trait_times {
            let table = self
                .store
                .as_of(SystemTable::TraitValues, at_time(*micros)?)
                .await?;
            let provider: Arc<dyn TableProvider> = match table {
                Some(table) => crate::store::table_provider(&table).await?,
                None => Arc::new(datafusion::datasource::MemTable::try_new(
                    crate::traits::values_schema(),
                    vec![vec![]],
                )?),
            };
            resolved.trait_tables.insert(*micros, provider);
        }
        let definitions = self.tag_definitions().await?;
        let trait_definitions = self.trait_definitions().await?;
        for (as_of, names) in &requests.tags {
            let (trait_names, tags): (BTreeSet<String>, BTreeSet<String>) =
                names.iter().cloned().partition(|name| {
                    !definitions.iter().any(|d| &d.name == name)
                        && trait_definitions.iter().any(|d| &d.name == name)
                });
            if !trait_names.is_empty() {
                let table = match as_of {
                    None => self.store.latest(SystemTable::TraitValues).await?,
                    Some(micros) => {
                        self.store
                            .as_of(SystemTable::TraitValues, at_time(*micros)?)
                            .await?
                    }
                };
                let mut indexes = match &table {
                    Some(table) => {
                        self.trait_indexes(table, &trait_definitions, &trait_names)
                            .await?
                    }
                    None => HashMap::new(),
                };
                for definition in trait_definitions
                    .iter()
                    .filter(|d| trait_names.contains(&d.name))
                {
                    indexes.entry(definition.name.clone()).or_insert_with(|| {
                        Arc::new(
                            TraitIndex::build(&definition.name, definition.value_type, &[], &[])
                                .expect("an empty index"),
                        )
                    });
                }
                resolved.traits.insert(*as_of, indexes);
            }
            let tags = &tags;
            if tags.is_empty() {
                continue;
            }
            let table = match as_of {
                None => self.store.latest(SystemTable::TagBitmaps).await?,
                Some(micros) => {
                    self.store
                        .as_of(SystemTable::TagBitmaps, at_time(*micros)?)
                        .await?
                }
            };
            let mut found = match table {
                Some(table) => self.cached_bitmaps(&table, tags).await?,
                None => HashMap::new(),
            };
            for tag in tags {
                let definition = definitions.iter().find(|d| &d.name == tag);
                match (found.get_mut(tag), definition, as_of) {
                    (Some(bitmaps), Some(definition), None) => {
                        if bitmaps.valued != definition.valued {
                            Arc::make_mut(bitmaps).valued = definition.valued;
                        }
                    }
                    (Some(_), _, Some(_)) => {}
                    // Defined, but the query selected nobody (or the first refresh never committed).
                    (None, Some(definition), None) => {
                        found.insert(
                            tag.clone(),
                            Arc::new(TagBitmaps {
                                valued: definition.valued,
                                values: HashMap::new(),
                            }),
                        );
                    }
                    (_, None, None) => {
                        return Err(EngineError::InvalidStatement(format!(
                            "unknown tag '{tag}' (SHOW TAGS lists the tags, SHOW TRAITS the traits)"
                        )));
                    }
                    (None, _, Some(micros)) => {
                        let at = DateTime::<Utc>::from_timestamp_micros(*micros)
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default();
                        return Err(EngineError::InvalidStatement(format!(
                            "tag '{tag}' had not been refreshed yet at {at}"
                        )));
                    }
                }
            }
            resolved.at.insert(*as_of, found);
        }
        Ok(resolved)
    }

    /// The decoded bitmaps of `tags` in this version of the bitmaps table, read once per version.
    async fn cached_bitmaps(
        &self,
        table: &deltalake::DeltaTable,
        tags: &BTreeSet<String>,
    ) -> Result<HashMap<String, Arc<TagBitmaps>>> {
        let version = table.version().unwrap_or_default();
        let mut cache = self.tag_cache.bitmaps.lock().await;
        let missing: Vec<&String> = tags
            .iter()
            .filter(|t| !cache.get(&version).is_some_and(|v| v.contains_key(*t)))
            .collect();
        if !missing.is_empty() {
            let mut read = read_bitmaps(table, &missing).await?;
            let entry = cache.entry(version).or_default();
            for tag in missing {
                match read.remove(tag) {
                    Some(bitmaps) => {
                        entry.insert(tag.clone(), Some(Arc::new(bitmaps)));
                    }
                    // Absent names are remembered only up to a bound: every name a client makes
                    // up would otherwise stay in memory for as long as the version is cached.
                    None if entry.values().filter(|b| b.is_none()).count()
                        < MAX_CACHED_ABSENT_TAGS =>
                    {
                        entry.insert(tag.clone(), None);
                    }
                    None => {}
                }
            }
            while cache.len() > super::CACHED_VERSIONS {
                cache.pop_first();
            }
        }
        let cached = &cache[&version];
        Ok(tags
            .iter()
            .filter_map(|t| Some((t.clone(), Arc::clone(cached.get(t)?.as_ref()?))))
            .collect())
    }
}

fn at_time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| EngineError::InvalidStatement(format!("{micros} us is out of range")))
}

async fn read_bitmaps(
    table: &deltalake::DeltaTable,
    tags: &[&String],
) -> Result<HashMap<String, TagBitmaps>> {
    let names: Vec<_> = tags.iter().map(|t| lit(t.as_str())).collect();
    let batches = crate::store::scan_table(table)
        .await?
        .filter(col("tag").in_list(names, false))?
        .select(vec![col("tag"), col("value"), col("bitmap")])?
        .collect()
        .await?;
    let mut found: HashMap<String, TagBitmaps> = HashMap::new();
    for batch in &batches {
        let tag_column = cast(batch.column(0), &DataType::Utf8)?;
        let value_column = cast(batch.column(1), &DataType::Utf8)?;
        let bitmap_column = cast(batch.column(2), &DataType::Binary)?;
        let (tag_column, value_column, bitmap_column) = (
            tag_column.as_string::<i32>(),
            value_column.as_string::<i32>(),
            bitmap_column.as_binary::<i32>(),
        );
        for row in 0..batch.num_rows() {
            let value = value_column
                .is_valid(row)
                .then(|| value_column.value(row).to_string());
            let bitmap = cohort_sql_extensions::bitmap::decode("tag", bitmap_column.value(row))?;
            let entry = found.entry(tag_column.value(row).to_string()).or_default();
            entry.valued |= value.is_some();
            entry.values.insert(value, bitmap);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn requests(sql: &str) -> Result<TagRequests> {
        let mut statements = DFParser::parse_sql(sql).unwrap();
        TagRequests::collect(&statements.pop_front().unwrap())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn names_of_no_tag_are_remembered_only_up_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(crate::EngineConfig {
            data: dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
        engine
            .execute(
                "INSERT INTO events (user_id, event, ts) VALUES (1, 'a', '2026-11-01T00:00:00Z')",
                None,
            )
            .await
            .unwrap();
        engine
            .execute(
                "CREATE TAG known AS SELECT DISTINCT user_id FROM events",
                None,
            )
            .await
            .unwrap();
        // A client making up 3,000 tag names.
        for round in 0..3 {
            let calls: Vec<String> = (0..1000)
                .map(|i| format!("has_tag(user_key, 'made_up_{round}_{i}')"))
                .collect();
            let sql = format!("SELECT {} FROM events", calls.join(", "));
            assert!(engine.execute(&sql, None).await.is_err());
        }
        let cache = engine.tag_cache.bitmaps.lock().await;
        let absent = cache
            .values()
            .map(|tags| tags.values().filter(|b| b.is_none()).count())
            .max()
            .unwrap_or(0);
        assert!(
            absent <= MAX_CACHED_ABSENT_TAGS,
            "{absent} absent names cached"
        );
        assert!(absent > 0, "absent names are still cached up to the bound");
    }

    #[test]
    fn collects_constant_references_everywhere() {
        let found = requests(
            "SELECT has_tag(user_key, 'VIP'), bitmap_cardinality(tag_bitmap('tier', 'gold')) \
             FROM audience('(a | b) - c:x') JOIN events USING (user_id) \
             WHERE bitmap_contains(audience_bitmap('d', TIMESTAMP '2026-11-16'), user_key)",
        )
        .unwrap();
        let now: Vec<_> = found.tags[&None].iter().cloned().collect();
        assert_eq!(now, ["a", "b", "c", "tier", "vip"]);
        let then = parse_as_of("2026-11-16").unwrap();
        assert_eq!(found.tags[&Some(then)].iter().collect::<Vec<_>>(), ["d"]);
        assert!(requests("SELECT 1").unwrap().is_empty());
        assert!(requests("EXPLAIN SELECT tag_bitmap('x')").unwrap().tags[&None].contains("x"));
    }

    #[test]
    fn bad_expressions_and_times_are_reported() {
        let error = requests("SELECT audience_bitmap('a &')")
            .unwrap_err()
            .to_string();
        assert!(error.contains("tag expression"), "{error}");
        let error = requests("SELECT * FROM audience('a', 'last week')")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a point in time"), "{error}");
        let error = requests("SELECT audience_bitmap('buyer', now())")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "the point in time of audience_bitmap must be a literal, e.g. \
             TIMESTAMP '2026-11-16 09:00:00' or '2026-11-16', not an expression such as now()"
        );
    }
}

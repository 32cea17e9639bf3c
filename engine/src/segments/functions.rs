//! The SQL side of segments.
//!
//! | name | kind | rows |
//! |---|---|---|
//! | `segment_members('name' [, version])` | table function | `user_id, user_key` of the newest (or given) version, `person_key` for a segment `BY PERSON`, and `split_group` for a segment with a `SPLIT` |
//! | `segment_changes('name', since_version [, until_version])` | table function | `user_id, user_key, [person_key,] [split_group,] change ('entered' / 'exited'), version, changed_at` for every version after `since_version` (up to and including `until_version`) |
//! | `segments` | view | `segment, schedule, version, members, persons, entered, exited, refreshed_at, query` |
//! | `segment_versions` | view | `segment, version, run_id, committed_at, members, persons, entered, exited`: size over time |
//! | `segment_runs` | view | one row per run: `segment, run_id, trigger, scheduled_at, started_at, finished_at, status, version, members, entered, exited, error` |
//!
//! ```sql
//! SELECT count(*) FROM segment_members('cart_abandoners');
//! SELECT change, count(*) FROM segment_changes('cart_abandoners', 3) GROUP BY change;
//! SELECT committed_at, members FROM segment_versions WHERE segment = 'cart_abandoners';
//! ```
//!
//! A consumer that stored the last version it processed resumes with
//! `segment_changes('name', last_version)`: versions are numbered without gaps and never change.
//!
//! A segment `BY PERSON` lists every identifier of each member person, with the `person_key`
//! it had in that version (an exited identifier: in the version it left), so an activation
//! tool receives all of a person's ids together; `members` counts identifiers and `persons`
//! people. Its split groups are drawn per person, so a person's identifiers share a group.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use cohort_sql_extensions::bitmap::{RoaringTreemap, decode};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, ScalarUDF, cast};
use datafusion::prelude::{col, lit};

use crate::function_args::{UsersOfBitmap, constant_string, table_argument};
use crate::identity::person_key::{PersonMap, person_key_of};
use crate::tables::{PERSON_KEY, USER_KEY, UTC};

/// A committed version as the functions need it: bitmaps still serialized, decoded on use.
#[derive(Debug, Clone)]
pub struct LoadedVersion {
    pub version: i64,
    pub committed_at: i64,
    pub members: Vec<u8>,
    pub entered: Vec<u8>,
    pub exited: Vec<u8>,
    /// BY PERSON: `(user_key, person_key)` of the members that are not their person's key.
    pub person_keys: Option<Vec<u8>>,
}

/// The versions of the segments a statement refers to, ascending, read before planning.
#[derive(Debug, Default)]
pub struct LoadedSegments {
    pub versions: HashMap<String, Arc<Vec<LoadedVersion>>>,
    /// The splits of those segments that have one.
    pub splits: HashMap<String, super::Split>,
    /// Those of them defined `BY PERSON`.
    pub by_person: HashSet<String>,
}

impl LoadedSegments {
    /// The columns after `user_id, user_key` for the members of `version`: `person_key` for a
    /// segment BY PERSON, and `split_group` for a split segment (drawn from the person's key
    /// when there is one, so that a person's identifiers share a group).
    fn member_columns(
        &self,
        name: &str,
        version: &LoadedVersion,
        split_group: &ScalarUDF,
    ) -> Result<Vec<Expr>> {
        let name = name.to_lowercase();
        let mut columns = Vec::new();
        let mut key = col(USER_KEY);
        if self.by_person.contains(&name) {
            let pairs = match &version.person_keys {
                Some(bytes) => super::versions::decode_person_keys(&name, bytes)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?,
                // A version made before the segment was redefined BY PERSON.
                None => Vec::new(),
            };
            key = person_key_of(Arc::new(PersonMap::from_pairs(pairs)), col(USER_KEY));
            columns.push(key.clone().alias(PERSON_KEY));
        }
        if let Some(split) = self.splits.get(&name) {
            columns.push(
                split_group
                    .call(vec![
                        key,
                        lit(split.seed.as_str()),
                        lit(split.groups.as_str()),
                    ])
                    .alias(super::SPLIT_GROUP_COLUMN),
            );
        }
        Ok(columns)
    }
}

impl LoadedSegments {
    fn of(&self, function: &str, name: &str) -> Result<&[LoadedVersion]> {
        match self.versions.get(&name.to_lowercase()) {
            Some(versions) if !versions.is_empty() => Ok(versions.as_slice()),
            Some(_) => plan_err!("{function}: segment '{name}' has no version yet"),
            None => plan_err!(
                "{function}: segment '{name}' is not loaded: the segment name must be a constant string"
            ),
        }
    }
}

fn arguments(function: &str, args: &TableFunctionArgs, max: usize) -> Result<Vec<ScalarValue>> {
    let exprs = args.exprs();
    if exprs.is_empty() || exprs.len() > max {
        return plan_err!("{function} takes 1 to {max} arguments, got {}", exprs.len());
    }
    exprs
        .iter()
        .map(|e| match table_argument(e) {
            Some(datafusion::logical_expr::ColumnarValue::Scalar(value)) => Ok(value),
            _ => Err(DataFusionError::Plan(format!(
                "{function}: {e} is not a constant"
            ))),
        })
        .collect()
}

fn segment_name(function: &str, value: &ScalarValue) -> Result<String> {
    match constant_string(
        function,
        1,
        &datafusion::logical_expr::ColumnarValue::Scalar(value.clone()),
    )? {
        Some(name) => Ok(name),
        None => plan_err!("{function}: the segment name is NULL"),
    }
}

fn version_number(function: &str, value: &ScalarValue) -> Result<i64> {
    match value.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(v))) => Ok(v),
        _ => plan_err!("{function}: the version must be an integer, found {value}"),
    }
}

fn bitmap(bytes: &[u8]) -> Result<RoaringTreemap> {
    decode("segment", bytes)
}

#[derive(Debug)]
pub struct SegmentMembersFunction {
    pub segments: Arc<LoadedSegments>,
    pub users: UsersOfBitmap,
    pub split_group: Arc<ScalarUDF>,
}

impl TableFunctionImpl for SegmentMembersFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = super::SEGMENT_MEMBERS;
        let values = arguments(NAME, &args, 2)?;
        let name = segment_name(NAME, &values[0])?;
        let versions = self.segments.of(NAME, &name)?;
        let chosen = match values.get(1) {
            None => versions.last().expect("not empty"),
            Some(value) => {
                let wanted = version_number(NAME, value)?;
                versions
                    .iter()
                    .find(|v| v.version == wanted)
                    .ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "{NAME}: segment '{name}' has no version {wanted} (it has {} to {})",
                            versions[0].version,
                            versions[versions.len() - 1].version
                        ))
                    })?
            }
        };
        let plan = self.users.plan(
            &bitmap(&chosen.members)?,
            self.segments
                .member_columns(&name, chosen, &self.split_group)?,
        )?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

#[derive(Debug)]
pub struct SegmentChangesFunction {
    pub segments: Arc<LoadedSegments>,
    pub users: UsersOfBitmap,
    pub split_group: Arc<ScalarUDF>,
}

impl TableFunctionImpl for SegmentChangesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = super::SEGMENT_CHANGES;
        let values = arguments(NAME, &args, 3)?;
        if values.len() < 2 {
            return plan_err!(
                "{NAME} takes a segment name, the version to read changes after and optionally the last version to read"
            );
        }
        let name = segment_name(NAME, &values[0])?;
        let since = version_number(NAME, &values[1])?;
        let until = match values.get(2) {
            Some(value) => version_number(NAME, value)?,
            None => i64::MAX,
        };
        let versions = self.segments.of(NAME, &name)?;
        let columns = |member: &LoadedVersion, change: &str, version: i64, at: i64| {
            let mut columns = self
                .segments
                .member_columns(&name, member, &self.split_group)?;
            columns.extend([
                lit(change).alias("change"),
                lit(version).alias("version"),
                cast(
                    lit(ScalarValue::TimestampMicrosecond(
                        Some(at),
                        Some(UTC.into()),
                    )),
                    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                )
                .alias("changed_at"),
            ]);
            Ok::<_, DataFusionError>(columns)
        };
        // An empty bitmap gives the schema when there is nothing to report.
        let mut plan = LogicalPlanBuilder::from(self.users.plan(
            &RoaringTreemap::new(),
            columns(&versions[0], "entered", 0, 0)?,
        )?);
        // Only the versions asked for are decoded and planned: a consumer catching up version
        // by version must not pay for the whole history on each step.
        for (at, version) in versions.iter().enumerate() {
            if version.version <= since || version.version > until {
                continue;
            }
            // An identifier that exited is reported with the person it had while a member.
            let before = at.checked_sub(1).map_or(version, |b| &versions[b]);
            for (change, bytes, member) in [
                ("entered", &version.entered, version),
                ("exited", &version.exited, before),
            ] {
                let rows = self.users.plan(
                    &bitmap(bytes)?,
                    columns(member, change, version.version, version.committed_at)?,
                )?;
                plan = plan.union(rows)?;
            }
        }
        Ok(Arc::new(ViewTable::new(plan.build()?, None)))
    }
}

//! The tables every store has, and the columns Cohort itself relies on.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::EngineError;

pub const CATALOG: &str = "cohort";
pub const SCHEMA: &str = "public";

pub const USER_ID: &str = "user_id";
pub const EVENT: &str = "event";
pub const TS: &str = "ts";
/// Partition column of `events`, derived from `ts` at ingest so date filters prune whole directories.
pub const EVENT_DATE: &str = "event_date";

/// The time zone every stored timestamp is normalised to.
pub const UTC: &str = "UTC";

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// Key of a user in bitmaps: a dense non-negative integer assigned at ingest, never reassigned.
pub const USER_KEY: &str = "user_key";
/// Key of the person an identifier belongs to (identity resolution): the smallest user key
/// among the person's identifiers; a user key when identity was never resolved.
pub const PERSON_KEY: &str = "person_key";

/// Column names Cohort keeps for its own bookkeeping: refused in inputs, hidden from SQL.
pub const RESERVED_PREFIX: &str = "__cohort_";
const WRITTEN_AT_PREFIX: &str = "__cohort_written_at__";

/// Beside each profile attribute, when an ingest last wrote it (the `persons` view's "most
/// recent value wins" needs it per attribute: upserts write only the columns they carry).
pub fn written_at_column(attribute: &str) -> String {
    format!("{WRITTEN_AT_PREFIX}{attribute}")
}

pub fn is_reserved_column(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// Where a Delta table lives inside the store, relative to its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableLocation(pub &'static str);

/// Tables Cohort keeps for itself: written by its own statements, readable through SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemTable {
    /// `user_id` (as text) -> `user_key`.
    UserKeys,
    /// One row per tag: name, query, valued.
    TagDefinitions,
    /// One bitmap per (tag, value), replaced per tag on refresh.
    TagBitmaps,
    SegmentDefinitions,
    /// One row per committed segment version: members, entered, exited.
    SegmentVersions,
    /// Start and end of every segment run.
    SegmentRuns,
    /// One row per trait: name, type, query.
    TraitDefinitions,
    /// One row per (trait, user) with a value, partitioned by trait, replaced per trait on refresh.
    TraitValues,
    /// One row per holdout: name, percent, seed.
    HoldoutDefinitions,
    /// One row per identity rule: name, priority, limit, query.
    IdentityRules,
    /// The identity refresh schedule (one row).
    IdentitySettings,
    /// `user_key -> person_key` for identifiers whose person is not keyed by themselves;
    /// overwritten by each refresh, whose commit is the identity version.
    IdentityPersons,
    /// Persons of an earlier version that became one, per identity version.
    IdentityMerges,
    /// Pairs a rule's LIMIT kept apart, per identity version.
    IdentityRefusals,
    /// One row per identity refresh: its version, counts and key watermark.
    IdentityRefreshes,
}

impl SystemTable {
    pub const ALL: [SystemTable; 15] = [
        SystemTable::UserKeys,
        SystemTable::TagDefinitions,
        SystemTable::TagBitmaps,
        SystemTable::SegmentDefinitions,
        SystemTable::SegmentVersions,
        SystemTable::SegmentRuns,
        SystemTable::TraitDefinitions,
        SystemTable::TraitValues,
        SystemTable::HoldoutDefinitions,
        SystemTable::IdentityRules,
        SystemTable::IdentitySettings,
        SystemTable::IdentityPersons,
        SystemTable::IdentityMerges,
        SystemTable::IdentityRefusals,
        SystemTable::IdentityRefreshes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SystemTable::UserKeys => "user_keys",
            SystemTable::TagDefinitions => "tag_definitions",
            SystemTable::TagBitmaps => "tag_bitmaps",
            SystemTable::SegmentDefinitions => "segment_definitions",
            SystemTable::SegmentVersions => "segment_versions",
            SystemTable::SegmentRuns => "segment_runs",
            SystemTable::TraitDefinitions => "trait_definitions",
            SystemTable::TraitValues => "trait_values",
            SystemTable::HoldoutDefinitions => "holdout_definitions",
            SystemTable::IdentityRules => "identity_rules",
            SystemTable::IdentitySettings => "identity_settings",
            SystemTable::IdentityPersons => "identity_persons",
            SystemTable::IdentityMerges => "identity_merges",
            SystemTable::IdentityRefusals => "identity_refusals",
            SystemTable::IdentityRefreshes => "identity_refreshes",
        }
    }
}

impl From<SystemTable> for TableLocation {
    fn from(table: SystemTable) -> Self {
        // Beside the user tables, under a prefix no user table name can take.
        TableLocation(match table {
            SystemTable::UserKeys => "_cohort/user_keys",
            SystemTable::TagDefinitions => "_cohort/tag_definitions",
            SystemTable::TagBitmaps => "_cohort/tag_bitmaps",
            SystemTable::SegmentDefinitions => "_cohort/segment_definitions",
            SystemTable::SegmentVersions => "_cohort/segment_versions",
            SystemTable::SegmentRuns => "_cohort/segment_runs",
            SystemTable::TraitDefinitions => "_cohort/trait_definitions",
            SystemTable::TraitValues => "_cohort/trait_values",
            SystemTable::HoldoutDefinitions => "_cohort/holdout_definitions",
            SystemTable::IdentityRules => "_cohort/identity_rules",
            SystemTable::IdentitySettings => "_cohort/identity_settings",
            SystemTable::IdentityPersons => "_cohort/identity_persons",
            SystemTable::IdentityMerges => "_cohort/identity_merges",
            SystemTable::IdentityRefusals => "_cohort/identity_refusals",
            SystemTable::IdentityRefreshes => "_cohort/identity_refreshes",
        })
    }
}

impl TableLocation {
    /// Columns a system table is partitioned by when it is created.
    pub fn partition_columns(self) -> Vec<String> {
        if self == TableLocation::from(SystemTable::TraitValues) {
            vec!["trait".to_string()]
        } else {
            vec![]
        }
    }
}

impl From<TableKind> for TableLocation {
    fn from(kind: TableKind) -> Self {
        TableLocation(kind.name())
    }
}

/// The tables of a store that ingest writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    Events,
    Profiles,
}

impl TableKind {
    pub const ALL: [TableKind; 2] = [TableKind::Events, TableKind::Profiles];

    pub fn name(self) -> &'static str {
        match self {
            TableKind::Events => "events",
            TableKind::Profiles => "profiles",
        }
    }

    /// Columns that every row must have (non-null).
    pub fn required_columns(self) -> &'static [&'static str] {
        match self {
            TableKind::Events => &[USER_ID, EVENT, TS],
            TableKind::Profiles => &[USER_ID],
        }
    }

    pub fn partition_columns(self) -> Vec<String> {
        match self {
            TableKind::Events => vec![EVENT_DATE.to_string()],
            TableKind::Profiles => vec![],
        }
    }

    /// The columns a table starts with, in this order; properties and attributes follow in
    /// the order they first arrive (the data model the README documents). `user_key` comes
    /// after the columns an input supplies, so `INSERT INTO events VALUES (user_id, event, ts)`
    /// lines up by position.
    pub fn leading_columns(self) -> &'static [&'static str] {
        match self {
            TableKind::Events => &[USER_ID, EVENT, TS, EVENT_DATE, USER_KEY],
            TableKind::Profiles => &[USER_ID, USER_KEY],
        }
    }

    /// The schema a table shows before anything was ingested into it.
    pub fn empty_schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .leading_columns()
            .iter()
            .map(|&name| {
                let data_type = match name {
                    EVENT => DataType::Utf8,
                    TS => timestamp_type(),
                    EVENT_DATE => DataType::Date32,
                    _ => DataType::Int64,
                };
                Field::new(name, data_type, true)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TableKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "events" => Ok(TableKind::Events),
            "profiles" => Ok(TableKind::Profiles),
            other => Err(EngineError::TableNotFound(format!(
                "{other} (ingest accepts 'events' or 'profiles')"
            ))),
        }
    }
}

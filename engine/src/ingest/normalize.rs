//! Validation and type normalisation of incoming rows, before anything is written.
//!
//! Every input is checked completely first: a missing required column, a missing value, a
//! timestamp that does not parse or a value that does not fit the column's stored type is an
//! error naming the input, the column and the (1-based) row, and the ingest writes nothing.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    DataType, Date32Type, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit,
};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{EngineError, Result};
use crate::tables::{
    EVENT, EVENT_DATE, RESERVED_PREFIX, TS, TableKind, USER_ID, USER_KEY, UTC, is_reserved_column,
    timestamp_type, written_at_column,
};

/// Characters Delta Lake does not allow in column names (without column mapping).
const FORBIDDEN_IN_NAMES: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// Collects validated inputs for one table and conforms them to a single schema: the table's
/// existing schema, extended by any new columns the inputs bring (schema evolution).
pub struct Normalizer {
    kind: TableKind,
    fields: Vec<FieldRef>,
    batches: Vec<RecordBatch>,
    /// Columns at least one input carried (the rest are back-filled with nulls).
    provided: Vec<String>,
    /// The table does not exist yet: this commit fixes its column order.
    creates_table: bool,
}

/// Validated rows, ready to commit.
pub struct Normalized {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Columns the inputs carried; an upsert changes only these.
    pub provided: Vec<String>,
}

impl Normalizer {
    /// `existing` is the table's current schema, if the table has been created.
    pub fn new(kind: TableKind, existing: Option<SchemaRef>) -> Self {
        let creates_table = existing.is_none();
        let fields = existing
            .map(|s| s.fields().iter().cloned().collect())
            .unwrap_or_default();
        Self {
            kind,
            fields,
            batches: Vec::new(),
            provided: Vec::new(),
            creates_table,
        }
    }

    /// Validates and converts one input. On error nothing from this input is kept.
    pub fn add(&mut self, source: &str, schema: &Schema, batches: &[RecordBatch]) -> Result<()> {
        for required in self.kind.required_columns() {
            if schema.index_of(required).is_err() {
                let found: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(EngineError::invalid_input(
                    source,
                    format!(
                        "missing required column '{required}' (columns found: {})",
                        found.join(", ")
                    ),
                ));
            }
        }

        let mut new_fields: Vec<FieldRef> = Vec::new();
        let mut plan: Vec<(usize, FieldRef)> = Vec::new();
        // An input's own event_date is only checked: the stored one is always ts's UTC date.
        let mut given_event_date = None;
        for (index, field) in schema.fields().iter().enumerate() {
            let name = field.name();
            if self.kind == TableKind::Events && name == EVENT_DATE {
                given_event_date = Some(index);
                continue;
            }
            if name == USER_KEY {
                return Err(EngineError::invalid_input(
                    source,
                    "column 'user_key' is assigned by Cohort from user_id; leave it out of the input",
                ));
            }
            if name == crate::tables::PERSON_KEY {
                return Err(EngineError::invalid_input(
                    source,
                    "column 'person_key' is computed by identity resolution (REFRESH IDENTITY); \
                     leave it out of the input or rename it",
                ));
            }
            if is_reserved_column(name) {
                return Err(EngineError::invalid_input(
                    source,
                    format!(
                        "column '{name}': names starting with '{RESERVED_PREFIX}' are reserved for \
                         Cohort's bookkeeping; rename the column"
                    ),
                ));
            }
            if let Some(bad) = name.chars().find(|c| FORBIDDEN_IN_NAMES.contains(c)) {
                return Err(EngineError::invalid_input(
                    source,
                    format!(
                        "column name '{name}' contains '{}', which the store does not allow in names",
                        bad.escape_default()
                    ),
                ));
            }
            if plan.iter().any(|(_, f)| f.name() == name) {
                return Err(EngineError::invalid_input(
                    source,
                    format!("column '{name}' appears more than once"),
                ));
            }
            let existing = self.fields.iter().find(|f| f.name() == name);
            let target = match existing {
                Some(f) => Arc::clone(f),
                None => {
                    let data_type = self.new_column_type(source, name, field.data_type())?;
                    let f = Arc::new(Field::new(name, data_type, true));
                    new_fields.push(Arc::clone(&f));
                    f
                }
            };
            plan.push((index, target));
        }

        // With the input's event_date: its column, and where ts is among the converted ones.
        let given_event_date = given_event_date.map(|given| {
            let ts = plan.iter().position(|(_, f)| f.name() == TS);
            (given, ts.expect("events always have ts"))
        });
        let mut converted = Vec::with_capacity(batches.len());
        let mut row_offset = 0usize;
        for batch in batches {
            let mut columns = Vec::with_capacity(plan.len());
            for (index, target) in &plan {
                let column = batch.column(*index);
                let array = convert_column(source, target, column, row_offset)?;
                if self
                    .kind
                    .required_columns()
                    .contains(&target.name().as_str())
                    && let Some(row) = first_null(&array)
                {
                    return Err(EngineError::invalid_input(
                        source,
                        format!(
                            "column '{}', row {}: value is missing",
                            target.name(),
                            row_offset + row + 1
                        ),
                    ));
                }
                columns.push(array);
            }
            if let Some((given, ts)) = given_event_date {
                check_event_date(source, batch.column(given), &columns[ts], row_offset)?;
            }
            let fields: Vec<FieldRef> = plan.iter().map(|(_, f)| Arc::clone(f)).collect();
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            converted.push(RecordBatch::try_new_with_options(
                Arc::new(Schema::new(fields)),
                columns,
                &options,
            )?);
            row_offset += batch.num_rows();
        }

        self.fields.extend(new_fields);
        self.batches.extend(converted);
        for (_, field) in &plan {
            if !self.provided.contains(field.name()) {
                self.provided.push(field.name().clone());
            }
        }
        Ok(())
    }

    fn new_column_type(&self, source: &str, name: &str, input: &DataType) -> Result<DataType> {
        let invalid = |message: String| EngineError::invalid_input(source, message);
        match name {
            USER_ID => match input {
                t if t.is_integer() => Ok(DataType::Int64),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(DataType::Utf8),
                DataType::Dictionary(_, value) => self.new_column_type(source, name, value),
                other => Err(invalid(format!(
                    "column 'user_id' must hold integers or strings, found {other}"
                ))),
            },
            EVENT => Ok(DataType::Utf8),
            TS if self.kind == TableKind::Events => Ok(timestamp_type()),
            _ => storage_type(input).ok_or_else(|| {
                invalid(format!(
                    "column '{name}' has type {input}, which the store cannot hold; convert it to a string, number, boolean, date or timestamp"
                ))
            }),
        }
    }

    /// The validated rows conformed to one schema (new columns filled with nulls in older inputs),
    /// plus the schema itself. Events also get their `event_date` partition column.
    pub fn finish(self) -> Result<Normalized> {
        let mut fields = self.fields;
        if self.kind == TableKind::Events && !fields.iter().any(|f| f.name() == EVENT_DATE) {
            fields.push(Arc::new(Field::new(EVENT_DATE, DataType::Date32, true)));
        }
        // Filled in by the commit, which assigns the keys.
        if !fields.iter().any(|f| f.name() == USER_KEY) {
            fields.push(Arc::new(Field::new(USER_KEY, DataType::Int64, true)));
        }
        if self.creates_table {
            // A stable sort: the leading columns in their order, the rest as they came.
            let leading = self.kind.leading_columns();
            fields.sort_by_key(|field| {
                leading
                    .iter()
                    .position(|name| name == field.name())
                    .unwrap_or(leading.len())
            });
        }
        let mut provided = self.provided;
        // Every attribute this ingest carries is written now, for every row it holds (a row
        // without a value writes NULL, as the upsert does).
        let mut written = Vec::new();
        if self.kind == TableKind::Profiles {
            for attribute in provided.iter().filter(|name| name.as_str() != USER_ID) {
                let column = written_at_column(attribute);
                if !fields.iter().any(|f| *f.name() == column) {
                    fields.push(Arc::new(Field::new(&column, timestamp_type(), true)));
                }
                written.push(column);
            }
        }
        provided.push(USER_KEY.to_string());
        let written_at = written_now();
        let schema = Arc::new(Schema::new(fields));
        let mut out = Vec::with_capacity(self.batches.len());
        for batch in self.batches {
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let column = if self.kind == TableKind::Events && field.name() == EVENT_DATE {
                    let ts = batch.column_by_name(TS).expect("events always have ts");
                    cast_with_options(ts, &DataType::Date32, &CastOptions::default())?
                } else if written.contains(field.name()) {
                    let times = TimestampMicrosecondArray::from_value(written_at, batch.num_rows());
                    Arc::new(times.with_timezone(UTC))
                } else {
                    match batch.column_by_name(field.name()) {
                        Some(c) => Arc::clone(c),
                        None => new_null_array(field.data_type(), batch.num_rows()),
                    }
                };
                columns.push(column);
            }
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            out.push(RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                columns,
                &options,
            )?);
        }
        provided.extend(written);
        Ok(Normalized {
            schema,
            batches: out,
            provided,
        })
    }
}

/// Microseconds since the epoch: the write time of every attribute one ingest carries.
fn written_now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

/// An input's `event_date` must be the UTC date of its `ts` (or missing): a different date
/// would mean the input and Cohort disagree about which day an event belongs to.
fn check_event_date(
    source: &str,
    given: &ArrayRef,
    ts: &ArrayRef,
    row_offset: usize,
) -> Result<()> {
    let target = Field::new(EVENT_DATE, DataType::Date32, true);
    let given = convert_column(source, &target, given, row_offset)?;
    let derived = cast_with_options(ts, &DataType::Date32, &CastOptions::default())?;
    let (given, derived) = (
        given.as_primitive::<Date32Type>(),
        derived.as_primitive::<Date32Type>(),
    );
    for row in 0..given.len() {
        if given.is_valid(row) && given.value(row) != derived.value(row) {
            let show = |array: &dyn Array| {
                ArrayFormatter::try_new(array, &FormatOptions::default())
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_else(|_| "?".into())
            };
            return Err(EngineError::invalid_input(
                source,
                format!(
                    "column 'event_date', row {}: {} is not the UTC date of ts {} ({}); leave \
                     event_date out and Cohort derives it",
                    row_offset + row + 1,
                    show(given),
                    show(ts.as_ref()),
                    show(derived),
                ),
            ));
        }
    }
    Ok(())
}

/// The type a new column is stored as: types Delta Lake can hold, with one canonical choice
/// where Arrow has several (e.g. every string encoding becomes Utf8).
pub fn storage_type(input: &DataType) -> Option<DataType> {
    use DataType::*;
    Some(match input {
        Null | Utf8 | LargeUtf8 | Utf8View => Utf8,
        Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Date32 => input.clone(),
        UInt8 | UInt16 => Int32,
        UInt32 | UInt64 => Int64,
        Float16 => Float32,
        Date64 => Date32,
        Decimal128(p, s) if *p <= 38 => Decimal128(*p, *s),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
        Timestamp(_, _) => timestamp_type(),
        Dictionary(_, value) => storage_type(value)?,
        List(item)
        | LargeList(item)
        | ListView(item)
        | LargeListView(item)
        | FixedSizeList(item, _) => List(Arc::new(Field::new(
            "element",
            storage_type(item.data_type())?,
            true,
        ))),
        Struct(fields) => Struct(
            fields
                .iter()
                .map(|f| storage_type(f.data_type()).map(|t| Field::new(f.name(), t, true)))
                .collect::<Option<Fields>>()?,
        ),
        _ => return None,
    })
}

/// Converts a column to the target field's type, naming the first value that does not convert.
pub(super) fn convert_column(
    source: &str,
    target: &Field,
    column: &ArrayRef,
    row_offset: usize,
) -> Result<ArrayRef> {
    let to = target.data_type();
    let name = target.name();
    if column.data_type() == to {
        return Ok(Arc::clone(column));
    }
    // An untyped all-null column (e.g. `VALUES (NULL)`) has no null buffer to inspect.
    if column.data_type() == &DataType::Null {
        return Ok(new_null_array(to, column.len()));
    }
    if name == TS && matches!(to, DataType::Timestamp(..)) && column.data_type().is_numeric() {
        return Err(EngineError::invalid_input(
            source,
            format!(
                "column 'ts' holds numbers ({}); give timestamps as RFC 3339 strings (2026-05-01T12:00:00Z) or a timestamp type, so the unit is not guessed",
                column.data_type()
            ),
        ));
    }
    let column = normalise_naive_timestamps(column)?;
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let converted = cast_with_options(&column, to, &options).map_err(|e| {
        EngineError::invalid_input(
            source,
            format!(
                "column '{name}' has type {} which cannot be stored as {to}: {e}",
                column.data_type()
            ),
        )
    })?;
    // A safe cast turns unconvertible values into nulls: any new null is a bad value.
    for row in 0..column.len() {
        if column.is_valid(row) && converted.is_null(row) {
            let shown = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
                .map(|f| f.value(row).to_string())
                .unwrap_or_else(|_| "?".into());
            let what = if name == TS {
                "a timestamp".to_string()
            } else {
                to.to_string()
            };
            return Err(EngineError::invalid_input(
                source,
                format!(
                    "column '{name}', row {}: cannot convert '{shown}' to {what}",
                    row_offset + row + 1
                ),
            ));
        }
    }
    Ok(converted)
}

/// Timestamps without a time zone are taken to be UTC (Arrow would otherwise treat them as
/// local wall-clock time in the target zone, which is the same thing only for UTC).
fn normalise_naive_timestamps(column: &ArrayRef) -> Result<ArrayRef> {
    match column.data_type() {
        DataType::Timestamp(unit, None) => Ok(cast_with_options(
            column,
            &DataType::Timestamp(*unit, Some("UTC".into())),
            &CastOptions::default(),
        )?),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Ok(Arc::clone(column)),
        _ => Ok(Arc::clone(column)),
    }
}

fn first_null(array: &ArrayRef) -> Option<usize> {
    if array.null_count() == 0 {
        return None;
    }
    (0..array.len()).find(|&i| array.is_null(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};

    fn events_input(ts: Vec<&str>) -> (SchemaRef, RecordBatch) {
        let n = ts.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("event", DataType::Utf8, false),
            Field::new("ts", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(StringArray::from(vec!["login"; n])),
                Arc::new(StringArray::from(ts)),
            ],
        )
        .unwrap();
        (schema, batch)
    }

    #[test]
    fn bad_timestamp_names_column_and_row() {
        let (schema, batch) = events_input(vec![
            "2026-01-01T00:00:00Z",
            "2026-01-02 10:00:00",
            "yesterday",
        ]);
        let mut n = Normalizer::new(TableKind::Events, None);
        let err = n.add("a.csv", &schema, &[batch]).unwrap_err().to_string();
        assert_eq!(
            err,
            "a.csv: column 'ts', row 3: cannot convert 'yesterday' to a timestamp"
        );
    }

    #[test]
    fn rows_are_counted_across_batches() {
        let (schema, first) = events_input(vec!["2026-01-01T00:00:00Z"; 5]);
        let (_, second) = events_input(vec!["2026-01-01T00:00:00Z", "nope"]);
        let mut n = Normalizer::new(TableKind::Events, None);
        let err = n
            .add("b", &schema, &[first, second])
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 7"), "{err}");
    }

    #[test]
    fn missing_required_column_is_named() {
        let schema = Schema::new(vec![Field::new("user_id", DataType::Int64, false)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let mut n = Normalizer::new(TableKind::Events, None);
        let err = n.add("c", &schema, &[batch]).unwrap_err().to_string();
        assert!(
            err.starts_with("c: missing required column 'event'"),
            "{err}"
        );
    }

    #[test]
    fn type_conflict_with_existing_column_names_row() {
        let existing = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("ltv", DataType::Float64, true),
        ]));
        let schema = Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ltv", DataType::Utf8, false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["1.5", "lots"])),
            ],
        )
        .unwrap();
        let mut n = Normalizer::new(TableKind::Profiles, Some(existing));
        let err = n.add("p.csv", &schema, &[batch]).unwrap_err().to_string();
        assert_eq!(
            err,
            "p.csv: column 'ltv', row 2: cannot convert 'lots' to Float64"
        );
    }

    #[test]
    fn new_columns_evolve_and_backfill_nulls() {
        let (schema, batch) = events_input(vec!["2026-03-01T08:00:00+08:00"]);
        let mut n = Normalizer::new(TableKind::Events, None);
        n.add("one", &schema, &[batch]).unwrap();
        let schema2 = Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("event", DataType::Utf8, false),
            Field::new("ts", DataType::Utf8, false),
            Field::new("revenue", DataType::Float64, true),
        ]);
        let batch2 = RecordBatch::try_new(
            Arc::new(schema2.clone()),
            vec![
                Arc::new(Int64Array::from(vec![9])),
                Arc::new(StringArray::from(vec!["purchase"])),
                Arc::new(StringArray::from(vec!["2026-03-02T00:00:00Z"])),
                Arc::new(Float64Array::from(vec![12.5])),
            ],
        )
        .unwrap();
        n.add("two", &schema2, &[batch2]).unwrap();
        let Normalized {
            schema,
            batches,
            provided,
        } = n.finish().unwrap();
        assert_eq!(provided, ["user_id", "event", "ts", "revenue", "user_key"]);
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "user_id",
                "event",
                "ts",
                "event_date",
                "user_key",
                "revenue"
            ]
        );
        assert_eq!(batches[0].column(5).null_count(), 1);
        assert_eq!(batches[0].column(2).data_type(), &timestamp_type());
        // 08:00 at +08:00 is midnight UTC, so the partition date is the same day.
        let dates =
            arrow::util::pretty::pretty_format_columns("d", &[Arc::clone(batches[0].column(3))])
                .unwrap()
                .to_string();
        assert!(dates.contains("2026-03-01"), "{dates}");
    }
}

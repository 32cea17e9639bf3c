//! Result columns as PostgreSQL types (`arrow-pg`'s mapping). A column type PostgreSQL has no
//! equivalent for (a map, a union) is sent as text, formatted as Arrow displays it, rather than
//! failing the whole query. Timestamps in text format are written as PostgreSQL writes them.

use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_pg::datatypes::field_into_pg_type;
use arrow_pg::encoder::encode_value;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Timelike};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

/// How a query's batches become PostgreSQL rows.
#[derive(Debug, Clone)]
pub struct PgColumns {
    /// The schema rows are encoded with.
    pub schema: SchemaRef,
    /// Columns converted to text on the way.
    as_text: Arc<Vec<bool>>,
}

impl PgColumns {
    pub fn of(schema: &Schema) -> Self {
        let as_text: Vec<bool> = schema
            .fields()
            .iter()
            .map(|field| field_into_pg_type(field).is_err())
            .collect();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .zip(&as_text)
            .map(|(field, text)| {
                if *text {
                    Field::new(field.name(), DataType::Utf8, true)
                } else {
                    field.as_ref().clone()
                }
            })
            .collect();
        Self {
            schema: Arc::new(Schema::new(fields)),
            as_text: Arc::new(as_text),
        }
    }

    /// `batch` with the columns PostgreSQL cannot type as text.
    pub fn convert(&self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        if !self.as_text.iter().any(|text| *text) {
            return Ok(batch);
        }
        let options = FormatOptions::default().with_null("");
        let columns = batch
            .columns()
            .iter()
            .zip(self.as_text.iter())
            .map(|(column, text)| {
                if !*text {
                    return Ok(Arc::clone(column));
                }
                let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
                let values: StringArray = (0..column.len())
                    .map(|row| {
                        column
                            .is_valid(row)
                            .then(|| formatter.value(row).to_string())
                    })
                    .collect();
                Ok(Arc::new(values) as ArrayRef)
            })
            .collect::<Result<Vec<_>, ArrowError>>()?;
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
    }
}

/// The rows of `batch` as PostgreSQL data rows. Timestamp columns sent as text use
/// PostgreSQL's ISO output (`2026-03-01 09:30:00.25+00`: the fraction without trailing
/// zeros, none when whole, the offset as `+hh[:mm]`), which psql's CSV and text-parsing
/// clients compare and display; `arrow-pg` pads to six digits. Other columns are `arrow-pg`'s.
pub fn encode_rows(
    fields: Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
) -> impl Iterator<Item = PgWireResult<DataRow>> {
    // Per column: None when arrow-pg encodes it, else the time zone of a timestamp column
    // written as PostgreSQL does (parsed once per batch, not per cell).
    let postgres_timestamps: Vec<Option<Result<Option<Tz>, String>>> = batch
        .schema()
        .fields()
        .iter()
        .zip(fields.iter())
        .map(|(arrow_field, pg_field)| {
            let DataType::Timestamp(_, zone) = arrow_field.data_type() else {
                return None;
            };
            let iso = pg_field.format() == FieldFormat::Text
                && pg_field
                    .format_options()
                    .date_style
                    .trim_start()
                    .to_ascii_uppercase()
                    .starts_with("ISO");
            iso.then(|| {
                zone.as_deref()
                    .map(|zone| zone.parse::<Tz>().map_err(|e| e.to_string()))
                    .transpose()
            })
        })
        .collect();
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let schema = batch.schema();
    (0..batch.num_rows()).map(move |row| {
        for (column, array) in batch.columns().iter().enumerate() {
            let pg_field = &fields[column];
            match &postgres_timestamps[column] {
                Some(zone) if array.is_valid(row) => {
                    let zone = zone
                        .as_ref()
                        .map_err(|e| PgWireError::ApiError(e.clone().into()))?;
                    let text = timestamp_text(array.as_ref(), row, zone.as_ref())?;
                    encoder.encode_field_with_type_and_format(
                        &text,
                        pg_field.datatype(),
                        FieldFormat::Text,
                        pg_field.format_options(),
                    )?;
                }
                _ => encode_value(&mut encoder, array, row, schema.field(column), pg_field)?,
            }
        }
        Ok(encoder.take_row())
    })
}

/// One timestamp as PostgreSQL's ISO DateStyle writes it, at microsecond precision, in the
/// column's time zone `zone` (with an offset) or without one for a timestamp without time zone.
fn timestamp_text(array: &dyn Array, row: usize, zone: Option<&Tz>) -> PgWireResult<String> {
    let DataType::Timestamp(unit, _) = array.data_type() else {
        unreachable!("only timestamp columns are formatted here")
    };
    let value = match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .value_as_datetime(row),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .value_as_datetime(row),
        TimeUnit::Microsecond => array
            .as_primitive::<TimestampMicrosecondType>()
            .value_as_datetime(row),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .value_as_datetime(row),
    };
    let utc = value.ok_or_else(|| {
        PgWireError::ApiError(format!("timestamp out of range in row {row}").into())
    })?;
    Ok(match zone {
        None => postgres_timestamp(&utc, None),
        Some(zone) => {
            let local: DateTime<FixedOffset> = zone.from_utc_datetime(&utc).fixed_offset();
            postgres_timestamp(&local.naive_local(), Some(*local.offset()))
        }
    })
}

fn postgres_timestamp(local: &NaiveDateTime, offset: Option<FixedOffset>) -> String {
    let mut text = local.format("%Y-%m-%d %H:%M:%S").to_string();
    let micros = local.nanosecond() / 1_000 % 1_000_000;
    if micros > 0 {
        let fraction = format!(".{micros:06}");
        text.push_str(fraction.trim_end_matches('0'));
    }
    if let Some(offset) = offset {
        let seconds = offset.local_minus_utc();
        let sign = if seconds < 0 { '-' } else { '+' };
        let seconds = seconds.unsigned_abs();
        text.push_str(&format!("{sign}{:02}", seconds / 3600));
        if seconds % 3600 != 0 {
            text.push_str(&format!(":{:02}", seconds % 3600 / 60));
        }
        if seconds % 60 != 0 {
            text.push_str(&format!(":{:02}", seconds % 60));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, MapBuilder, StringBuilder, TimestampMicrosecondArray};

    #[test]
    fn columns_without_a_postgres_type_become_text() {
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        map.keys().append_value("plan");
        map.values().append_value("pro");
        map.append(true).unwrap();
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![7])) as ArrayRef),
            ("attributes", Arc::new(map.finish()) as ArrayRef),
        ])
        .unwrap();
        let columns = PgColumns::of(&batch.schema());
        assert_eq!(columns.schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(columns.schema.field(1).data_type(), &DataType::Utf8);
        let converted = columns.convert(batch).unwrap();
        let text = converted
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(text.value(0), "{plan: pro}");
    }

    #[test]
    fn timestamps_are_written_as_postgresql_writes_them() {
        let instants = TimestampMicrosecondArray::from(vec![
            1_767_225_600_000_000,
            1_767_225_606_439_730,
            1_767_225_606_000_001,
        ]);
        let utc = instants.clone().with_timezone("UTC");
        let text: Vec<String> = (0..3)
            .map(|row| timestamp_text(&utc, row, Some(&"UTC".parse().unwrap())).unwrap())
            .collect();
        assert_eq!(
            text,
            [
                "2026-01-01 00:00:00+00",
                "2026-01-01 00:00:06.43973+00",
                "2026-01-01 00:00:06.000001+00"
            ]
        );
        let india = instants.clone().with_timezone("+05:30");
        assert_eq!(
            timestamp_text(&india, 0, Some(&"+05:30".parse().unwrap())).unwrap(),
            "2026-01-01 05:30:00+05:30"
        );
        let new_york = instants.clone().with_timezone("America/New_York");
        assert_eq!(
            timestamp_text(&new_york, 0, Some(&"America/New_York".parse().unwrap())).unwrap(),
            "2025-12-31 19:00:00-05"
        );
        assert_eq!(
            timestamp_text(&instants, 1, None).unwrap(),
            "2026-01-01 00:00:06.43973"
        );
    }
}

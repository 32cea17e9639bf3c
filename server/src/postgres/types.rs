//! Result columns as PostgreSQL types (`arrow-pg`'s mapping). A column type PostgreSQL has no
//! equivalent for (a map, a union) is sent as text, formatted as Arrow displays it, rather than
//! failing the whole query.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_pg::datatypes::field_into_pg_type;

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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, MapBuilder, StringBuilder};

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
}

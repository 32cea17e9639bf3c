//! The types results leave the server with. JDBC, ODBC and ADBC drivers read plain Utf8 and
//! Binary but not every newer Arrow encoding, so view and dictionary types are cast at the
//! boundary, and the FlightInfo schema and the DoGet stream are derived by the same function.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;

/// The wire type for a result column type.
pub fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, value) => wire_type(value),
        DataType::ListView(item) | DataType::LargeList(item) | DataType::LargeListView(item) => {
            DataType::List(wire_field(item))
        }
        DataType::List(item) => DataType::List(wire_field(item)),
        DataType::FixedSizeList(item, n) => DataType::FixedSizeList(wire_field(item), *n),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(wire_field).collect::<Fields>())
        }
        DataType::Map(entries, sorted) => DataType::Map(wire_field(entries), *sorted),
        other => other.clone(),
    }
}

fn wire_field(field: &FieldRef) -> FieldRef {
    Arc::new(Field::new(
        field.name(),
        wire_type(field.data_type()),
        field.is_nullable(),
    ))
}

/// The schema a result is announced with: wire types, every column nullable (the planner's
/// nullability is not always what execution produces), no field metadata.
pub fn wire_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), wire_type(f.data_type()), true))
            .collect::<Vec<_>>(),
    ))
}

/// Converts a batch to `target` (a [`wire_schema`] of the batch's logical schema).
pub fn to_wire(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.num_columns() != target.fields().len() {
        return Err(ArrowError::SchemaError(format!(
            "result has {} columns, announced schema {}",
            batch.num_columns(),
            target.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(target), columns, &options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, StringViewArray};
    use arrow::datatypes::Int32Type;

    #[test]
    fn views_and_dictionaries_become_plain_utf8() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Utf8View, false),
            Field::new(
                "b",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
        ]);
        let target = wire_schema(&schema);
        assert_eq!(target.field(0).data_type(), &DataType::Utf8);
        assert_eq!(target.field(1).data_type(), &DataType::Utf8);
        let dict: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringViewArray::from(vec!["p", "q", "r"])),
                Arc::new(dict),
            ],
        )
        .unwrap();
        let wire = to_wire(&batch, &target).unwrap();
        assert_eq!(wire.schema(), target);
        assert_eq!(wire.num_rows(), 3);
    }
}

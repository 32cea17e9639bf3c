//! What a statement produces and who may run it: the types every statement kind (queries,
//! INSERT, the catalog statements) shares, in a module that depends on none of them.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;

/// What a statement produced.
pub enum StatementOutcome {
    /// A query: its rows are produced when the DataFrame is executed.
    Query(DataFrame),
    /// A statement that changed data, with the number of rows it wrote.
    RowsAffected(u64),
}

/// What the caller of a statement may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries and SHOW only.
    ReadOnly,
    /// Also INSERT and the catalog statements that define, change or refresh.
    ReadWrite,
}

/// The one-row result a data-changing statement returns on the query path.
pub fn rows_affected_batch(rows: u64) -> RecordBatch {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("rows_affected", arrow::datatypes::DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int64Array::from(vec![rows as i64]))],
    )
    .expect("fixed schema")
}

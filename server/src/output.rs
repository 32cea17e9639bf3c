//! Printing query results for `cohort sql`.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::config::OutputFormat;

/// The widest cell the table format prints; a longer value (a bitmap's thousands of ids) is
/// cut with `…` and its length. CSV and JSON print every value whole.
const MAX_CELL_CHARS: usize = 100;

pub fn print(
    schema: &Schema,
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            if is_explain(schema) {
                print_explain(batches, out)?;
            } else if batches.iter().all(|b| b.num_rows() == 0) {
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "(0 rows; columns: {})", columns.join(", "))?;
            } else {
                let cut = batches
                    .iter()
                    .map(|batch| as_text(batch, Some(MAX_CELL_CHARS)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&cut)?)?;
            }
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            // The header is written with the first batch, so an empty result still has one.
            let empty = [RecordBatch::new_empty(Arc::new(schema.clone()))];
            let batches = if batches.is_empty() {
                &empty[..]
            } else {
                batches
            };
            for batch in batches {
                writer.write(&as_text(batch, None)?)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// `EXPLAIN` answers (plan_type, plan) with multi-line plans, which a table cell would flatten.
fn is_explain(schema: &Schema) -> bool {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names == ["plan_type", "plan"]
}

fn print_explain(batches: &[RecordBatch], out: &mut dyn Write) -> anyhow::Result<()> {
    for batch in batches {
        let options = FormatOptions::default();
        let kinds = ArrayFormatter::try_new(batch.column(0).as_ref(), &options)?;
        let plans = ArrayFormatter::try_new(batch.column(1).as_ref(), &options)?;
        for row in 0..batch.num_rows() {
            writeln!(out, "{}:", kinds.value(row))?;
            for line in plans.value(row).to_string().lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }
    Ok(())
}

/// The batch with nested columns (lists, structs, maps), which the CSV writer refuses, as
/// their text; with `max_chars`, every column as text cut to that width.
fn as_text(batch: &RecordBatch, max_chars: Option<usize>) -> anyhow::Result<RecordBatch> {
    let options = FormatOptions::default();
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if max_chars.is_none() && !field.data_type().is_nested() {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
        let mut text = StringBuilder::with_capacity(column.len(), column.len() * 8);
        for row in 0..column.len() {
            if column.is_null(row) {
                text.append_null();
                continue;
            }
            let value = formatter.value(row).to_string();
            match max_chars {
                Some(max) => text.append_value(cut(&value, max)),
                None => text.append_value(value),
            }
        }
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
        columns.push(Arc::new(text.finish()));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// `value` if it has at most `max` characters, else its start, `…` and its full length.
fn cut(value: &str, max: usize) -> String {
    let chars = value.chars().count();
    if chars <= max {
        return value.to_string();
    }
    let start: String = value.chars().take(max).collect();
    format!("{start}… ({chars} chars)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_are_cut_with_their_length() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 3), "abc… (6 chars)");
        assert_eq!(cut("ééééé", 2), "éé… (5 chars)");
    }
}

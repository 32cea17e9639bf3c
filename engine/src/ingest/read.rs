//! Decoding input files into Arrow batches. The format comes from the file extension.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{EngineError, Result};

const BATCH_SIZE: usize = 8192;

/// Input formats `cohort ingest` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
    NdJson,
}

impl FileFormat {
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "parquet" | "pq" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "json" | "ndjson" | "jsonl" => Ok(Self::NdJson),
            _ => Err(EngineError::Read {
                path: path.display().to_string(),
                message: "unknown file type: expected .parquet, .csv, .ndjson, .jsonl or .json"
                    .into(),
            }),
        }
    }
}

/// A decoded input file.
pub struct InputFile {
    pub name: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

pub fn read_file(path: &Path) -> Result<InputFile> {
    let name = path.display().to_string();
    let read_error = |message: String| EngineError::Read {
        path: name.clone(),
        message,
    };
    let format = FileFormat::from_path(path)?;
    let file = File::open(path).map_err(|e| read_error(e.to_string()))?;
    let (schema, batches) = match format {
        FileFormat::Parquet => read_parquet(file).map_err(|e| read_error(e.to_string()))?,
        FileFormat::Csv => read_csv(file).map_err(|e| read_error(e.to_string()))?,
        FileFormat::NdJson => read_ndjson(file).map_err(|e| read_error(e.to_string()))?,
    };
    Ok(InputFile {
        name,
        schema,
        batches,
    })
}

type Decoded = std::result::Result<(SchemaRef, Vec<RecordBatch>), Box<dyn std::error::Error>>;

fn read_parquet(file: File) -> Decoded {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(BATCH_SIZE);
    let schema = Arc::clone(builder.schema());
    let batches = builder
        .build()?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// CSV columns are inferred over the whole file, so a column with one odd value becomes text and
/// validation can then name the row that does not parse.
fn read_csv(mut file: File) -> Decoded {
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (schema, _) = format.infer_schema(BufReader::new(&mut file), None)?;
    file.seek(SeekFrom::Start(0))?;
    let schema = Arc::new(schema);
    let reader = arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
        .with_format(format)
        .with_batch_size(BATCH_SIZE)
        .build(BufReader::new(file))?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

fn read_ndjson(mut file: File) -> Decoded {
    let (schema, _) =
        arrow::json::reader::infer_json_schema_from_seekable(BufReader::new(&mut file), None)?;
    file.seek(SeekFrom::Start(0))?;
    let schema = Arc::new(schema);
    let reader = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(BATCH_SIZE)
        .build(BufReader::new(file))?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

//! Decoding input files into Arrow batches. The format comes from the file extension.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use flate2::read::MultiGzDecoder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::normalize::convert_column;
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
    /// The format a file name implies; a `.gz` suffix is looked through (`events.csv.gz`).
    pub fn from_path(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name
            .rsplit_once('.')
            .map(|(_, ext)| ext)
            .unwrap_or_default();
        match ext {
            "parquet" | "pq" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "json" | "ndjson" | "jsonl" => Ok(Self::NdJson),
            _ => Err(EngineError::Read {
                path: path.display().to_string(),
                message: "unknown file type: expected .parquet, .csv, .ndjson, .jsonl or .json \
                          (optionally .gz), or give --format"
                    .into(),
            }),
        }
    }
}

/// The input path that means standard input.
pub const STDIN_PATH: &str = "-";

/// A decoded input file.
pub struct InputFile {
    pub name: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Reads one input: a file, or standard input for `-`. `format` overrides what the file name
/// implies (and is needed for standard input). Gzip-compressed input, by its `.gz` name or its
/// first bytes, is decompressed first.
pub fn read_file(path: &Path, format: Option<FileFormat>) -> Result<InputFile> {
    let from_stdin = path.as_os_str() == STDIN_PATH;
    let name = if from_stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let io = |e: std::io::Error| read_error(&name, e.to_string());
    let format = match format {
        Some(format) => format,
        None if from_stdin => {
            return Err(read_error(
                &name,
                "give its format (--format csv, ndjson or parquet): standard input has no \
                 file name to tell it by",
            ));
        }
        None => FileFormat::from_path(path)?,
    };
    let file = if from_stdin {
        // The decoders read a file twice (schema inference, then the rows), so the stream is
        // kept in a temporary file (in TMPDIR) first: decompressed already, if it is gzip.
        let mut stdin = std::io::stdin().lock();
        let mut head = Vec::with_capacity(GZIP_MAGIC.len());
        (&mut stdin)
            .take(GZIP_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        let gzip = head == GZIP_MAGIC;
        let mut whole = std::io::Cursor::new(head).chain(stdin);
        if gzip {
            spool(&mut MultiGzDecoder::new(BufReader::new(whole)))
                .map_err(|e| read_error(&name, format!("cannot decompress it as gzip: {e}")))?
        } else {
            spool(&mut whole).map_err(io)?
        }
    } else {
        let mut file = File::open(path).map_err(io)?;
        let named_gz = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("gz"));
        let gzip = is_gzip(&mut file).map_err(io)?;
        if named_gz && !gzip {
            return Err(read_error(&name, "is named .gz but is not gzip-compressed"));
        }
        if gzip {
            spool(&mut MultiGzDecoder::new(BufReader::new(file)))
                .map_err(|e| read_error(&name, format!("cannot decompress it as gzip: {e}")))?
        } else {
            file
        }
    };
    let (schema, batches) = match format {
        FileFormat::Parquet => read_parquet(file).map_err(|e| read_error(&name, e.to_string()))?,
        FileFormat::Csv => read_csv(&name, file)?,
        FileFormat::NdJson => read_ndjson(&name, file)?,
    };
    Ok(InputFile {
        name,
        schema,
        batches,
    })
}

/// A temporary file (removed when closed) holding everything `reader` gives.
fn spool(reader: &mut dyn Read) -> std::io::Result<File> {
    let mut file = tempfile::tempfile()?;
    std::io::copy(reader, &mut file)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `file` starts with gzip's magic bytes; leaves it at its start.
fn is_gzip(file: &mut File) -> std::io::Result<bool> {
    let mut magic = Vec::with_capacity(GZIP_MAGIC.len());
    (&mut *file)
        .take(GZIP_MAGIC.len() as u64)
        .read_to_end(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(magic == GZIP_MAGIC)
}

fn read_error(name: &str, message: impl Into<String>) -> EngineError {
    EngineError::Read {
        path: name.to_string(),
        message: message.into(),
    }
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

/// CSV columns are inferred over the whole file, so a column with one odd value becomes text,
/// and the file is decoded straight into the inferred types. A value that still fails to parse
/// (a date that looks like one but is not) makes a second, slower pass that reads the file as
/// text and converts it by the same checked conversion every input goes through, so the error
/// names the column and 1-based data row like any other bad value.
fn read_csv(name: &str, mut file: File) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (inferred, _) = format
        .infer_schema(BufReader::new(&mut file), None)
        .map_err(|e| read_error(name, csv_message(&e)))?;
    let schema = Arc::new(inferred);
    let decoded = decode_csv(name, &mut file, &format, Arc::clone(&schema));
    let error = match decoded {
        Ok(batches) => return Ok((schema, batches)),
        Err(error) => error,
    };
    let text = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| Field::new(field.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let mut rows = 0;
    for batch in decode_csv(name, &mut file, &format, text)? {
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            convert_column(name, field, column, rows)?;
        }
        rows += batch.num_rows();
    }
    Err(error)
}

/// The whole of `file` decoded as `schema`.
fn decode_csv(
    name: &str,
    file: &mut File,
    format: &arrow::csv::reader::Format,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| read_error(name, e.to_string()))?;
    arrow::csv::ReaderBuilder::new(schema)
        .with_format(format.clone())
        .with_batch_size(BATCH_SIZE)
        .build(BufReader::new(file))
        .and_then(|reader| reader.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| read_error(name, csv_message(&e)))
}

/// arrow-csv's message for a row with the wrong number of fields (`Expected 3 records, found
/// 4 records at line 3`) in Cohort's words; any other without its category prefix.
fn csv_message(error: &ArrowError) -> String {
    let message = crate::error::arrow_message(error);
    let Some(rest) = message.split("Expected ").nth(1) else {
        return message;
    };
    let numbers: Vec<usize> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect();
    match numbers.as_slice() {
        // The line counts the header; rows count data from 1.
        [expected, found, line] if rest.contains("records at line") && *line > 1 => format!(
            "row {}: {found} fields where the header has {expected}",
            line - 1
        ),
        _ => message,
    }
}

fn read_ndjson(name: &str, mut file: File) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let io = |e: std::io::Error| read_error(name, e.to_string());
    if first_byte(&mut file).map_err(io)? == Some(b'[') {
        return Err(read_error(
            name,
            "holds a JSON array; Cohort reads newline-delimited JSON, one object per line \
             (convert with: jq -c '.[]' FILE)",
        ));
    }
    let decoded = (|| -> Decoded {
        let (schema, _) =
            arrow::json::reader::infer_json_schema_from_seekable(BufReader::new(&mut file), None)?;
        file.seek(SeekFrom::Start(0))?;
        let schema = Arc::new(schema);
        let reader = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
            .with_batch_size(BATCH_SIZE)
            .build(BufReader::new(&mut file))?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((schema, batches))
    })();
    decoded.map_err(|error| {
        // The JSON decoder counts lines within the record it parses, so its `line 1` is not
        // the file's: find the line that does not parse.
        match first_invalid_line(&mut file) {
            Ok(Some((line, reason))) => read_error(name, format!("row {line}: {reason}")),
            _ => read_error(
                name,
                match error.downcast_ref::<ArrowError>() {
                    Some(arrow) => crate::error::arrow_message(arrow),
                    None => error.to_string(),
                },
            ),
        }
    })
}

fn first_byte(file: &mut File) -> std::io::Result<Option<u8>> {
    let mut reader = BufReader::new(&mut *file);
    let found = loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            break None;
        }
        if let Some(byte) = buffer.iter().find(|b| !b.is_ascii_whitespace()) {
            break Some(*byte);
        }
        let length = buffer.len();
        reader.consume(length);
    };
    drop(reader);
    file.seek(SeekFrom::Start(0))?;
    Ok(found)
}

/// The first line (1-based, blank lines counted as the decoder skips them) that is not one
/// JSON object, and why, with the column of the fault.
fn first_invalid_line(file: &mut File) -> std::io::Result<Option<(usize, String)>> {
    file.seek(SeekFrom::Start(0))?;
    for (index, line) in BufReader::new(&mut *file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reason = match serde_json::from_str::<serde_json::Value>(&line) {
            Err(e) => format!(
                "not valid JSON: {} (column {})",
                json_reason(&e),
                e.column()
            ),
            Ok(serde_json::Value::Object(_)) => continue,
            Ok(_) => "not a JSON object".to_string(),
        };
        return Ok(Some((index + 1, reason)));
    }
    Ok(None)
}

/// serde_json's message without its ` at line L column C` suffix.
fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

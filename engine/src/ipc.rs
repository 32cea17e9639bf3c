//! Arrow IPC bytes from clients (bound parameters, bulk ingest, statement handles), checked
//! before arrow decodes them.
//!
//! arrow's readers trust the lengths a message claims: a stream whose record batch claims a
//! 2^62-byte body is allocated at that size before a byte is read, and an LZ4/ZSTD buffer's
//! 8-byte "uncompressed length" prefix is allocated before the codec runs. An allocation that
//! large aborts the process (it is not a recoverable error in Rust). So every message is first
//! walked here: framing lengths against the bytes actually present, buffer ranges against the
//! body, and the sum of declared uncompressed lengths against a decode budget. Only then does
//! arrow decode it.

use arrow::ipc::reader::StreamReader;
use arrow::ipc::{Message, MessageHeader, root_as_message};
use arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};

/// Marks a message in the IPC stream format (followed by the metadata length).
const CONTINUATION: u32 = 0xFFFF_FFFF;

/// Most bytes the messages of one client request may decode to (compressed buffers expanded).
#[derive(Debug)]
pub struct DecodeBudget {
    what: &'static str,
    limit: u64,
    used: u64,
}

impl DecodeBudget {
    pub fn new(what: &'static str, limit: u64) -> Self {
        Self {
            what,
            limit,
            used: 0,
        }
    }

    fn spend(&mut self, bytes: u64) -> Result<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(EngineError::ResourcesExhausted(format!(
                "{} decodes to more than {} bytes; send less data per request",
                self.what, self.limit
            )));
        }
        Ok(())
    }
}

fn malformed(what: &str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidInput {
        source_name: what.to_string(),
        message: format!("malformed Arrow IPC: {}", message.into()),
    }
}

/// Checks one message: `header` is its flatbuffer metadata, `body` the bytes that follow it
/// (for Flight, `FlightData.data_header` and `data_body`). Returns the length of the body the
/// message claims (checked to be present).
pub fn check_message(header: &[u8], body: &[u8], budget: &mut DecodeBudget) -> Result<usize> {
    let what = budget.what;
    let message = root_as_message(header).map_err(|e| malformed(what, e.to_string()))?;
    let claimed = message.bodyLength();
    if claimed < 0 || claimed as u64 > body.len() as u64 {
        return Err(malformed(
            what,
            format!(
                "a message claims a {claimed}-byte body but {} bytes follow it",
                body.len()
            ),
        ));
    }
    check_buffers(&message, &body[..claimed as usize], budget)?;
    Ok(claimed as usize)
}

fn check_buffers(message: &Message, body: &[u8], budget: &mut DecodeBudget) -> Result<()> {
    let what = budget.what;
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    let Some(batch) = batch else {
        return Ok(());
    };
    if batch.length() < 0 {
        return Err(malformed(
            what,
            "a record batch claims a negative row count",
        ));
    }
    let compressed = batch.compression().is_some();
    let mut decoded = 0u64;
    for buffer in batch.buffers().into_iter().flatten() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let end = offset.checked_add(length);
        if offset < 0 || length < 0 || end.is_none_or(|end| end as u64 > body.len() as u64) {
            return Err(malformed(
                what,
                format!(
                    "a buffer at {offset} of {length} bytes lies outside the {}-byte body",
                    body.len()
                ),
            ));
        }
        let bytes = &body[offset as usize..(offset + length) as usize];
        decoded += if compressed && bytes.len() >= 8 {
            let prefix = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            match prefix {
                // -1: stored uncompressed after the prefix.
                -1 => bytes.len() as u64 - 8,
                n if n >= 0 => n as u64,
                n => {
                    return Err(malformed(
                        what,
                        format!("a compressed buffer claims {n} uncompressed bytes"),
                    ));
                }
            }
        } else {
            bytes.len() as u64
        };
    }
    budget.spend(decoded)
}

/// Checks a whole IPC stream (schema, dictionaries, batches, optional end marker) without
/// decoding it.
pub fn check_stream(bytes: &[u8], budget: &mut DecodeBudget) -> Result<()> {
    let what = budget.what;
    let mut rest = bytes;
    while !rest.is_empty() {
        let word = |at: &[u8]| -> Result<u32> {
            at.get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .ok_or_else(|| malformed(what, "the stream ends inside a message length"))
        };
        let mut length = word(rest)?;
        rest = &rest[4..];
        if length == CONTINUATION {
            length = word(rest)?;
            rest = &rest[4..];
        }
        if length == 0 {
            return Ok(());
        }
        let length = length as usize;
        if length > rest.len() {
            return Err(malformed(
                what,
                format!(
                    "a message claims {length} bytes of metadata but {} bytes remain",
                    rest.len()
                ),
            ));
        }
        let (header, after) = rest.split_at(length);
        let body = check_message(header, after, budget)?;
        rest = &after[body..];
    }
    Ok(())
}

/// Decodes an IPC stream after [`check_stream`].
pub fn read_stream(bytes: &[u8], budget: &mut DecodeBudget) -> Result<Vec<RecordBatch>> {
    check_stream(bytes, budget)?;
    let what = budget.what;
    let reader = StreamReader::try_new(bytes, None).map_err(|e| malformed(what, e.to_string()))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| malformed(what, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};

    fn stream(compression: Option<CompressionType>) -> Vec<u8> {
        let values: Int64Array = (0..100).map(|i| (i % 3 != 0).then_some(i)).collect();
        let batch = RecordBatch::try_from_iter([("x", Arc::new(values) as _)]).unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .unwrap();
        let mut out = Vec::new();
        let mut writer =
            StreamWriter::try_new_with_options(&mut out, &batch.schema(), options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        out
    }

    fn budget() -> DecodeBudget {
        DecodeBudget::new("parameters", 1 << 20)
    }

    /// Replaces the one occurrence of `from` (little-endian) with `to`.
    fn patch(bytes: &mut [u8], from: i64, to: i64) {
        let needle = from.to_le_bytes();
        let at: Vec<usize> = (0..bytes.len() - 8)
            .filter(|&i| bytes[i..i + 8] == needle)
            .collect();
        assert_eq!(at.len(), 1, "{from} occurs {} times", at.len());
        bytes[at[0]..at[0] + 8].copy_from_slice(&to.to_le_bytes());
    }

    #[test]
    fn well_formed_streams_decode() {
        for compression in [
            None,
            Some(CompressionType::LZ4_FRAME),
            Some(CompressionType::ZSTD),
        ] {
            let batches = read_stream(&stream(compression), &mut budget()).unwrap();
            assert_eq!(batches[0].num_rows(), 100);
        }
    }

    /// The body length the stream's record batch message claims.
    fn batch_body_length(bytes: &[u8]) -> i64 {
        let mut rest = bytes;
        loop {
            let length = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
            let message = root_as_message(&rest[8..8 + length]).unwrap();
            if message.header_type() == MessageHeader::RecordBatch {
                return message.bodyLength();
            }
            rest = &rest[8 + length + message.bodyLength() as usize..];
        }
    }

    #[test]
    fn a_claimed_body_past_the_bytes_present_is_refused() {
        let mut bytes = stream(None);
        let body = batch_body_length(&bytes);
        patch(&mut bytes, body, 1 << 62);
        let err = read_stream(&bytes, &mut budget()).unwrap_err();
        assert!(err.to_string().contains("body"), "{err}");
    }

    #[test]
    fn claimed_uncompressed_lengths_spend_the_budget() {
        let mut bytes = stream(Some(CompressionType::LZ4_FRAME));
        // The values buffer's prefix claims 800 uncompressed bytes.
        patch(&mut bytes, 800, 1 << 40);
        let err = read_stream(&bytes, &mut budget()).unwrap_err();
        assert!(matches!(err, EngineError::ResourcesExhausted(_)), "{err}");
        let mut small = DecodeBudget::new("parameters", 100);
        let err = read_stream(&stream(None), &mut small).unwrap_err();
        assert!(matches!(err, EngineError::ResourcesExhausted(_)), "{err}");
    }

    #[test]
    fn truncated_and_garbage_streams_are_errors() {
        let bytes = stream(None);
        for cut in [3, 7, 20, bytes.len() / 2, bytes.len() - 9] {
            assert!(
                read_stream(&bytes[..cut], &mut budget()).is_err(),
                "cut at {cut}"
            );
        }
        assert!(read_stream(&[0xff; 64], &mut budget()).is_err());
    }
}

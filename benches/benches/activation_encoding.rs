//! How `ActivationService` should carry segment members: Arrow IPC inside `UsersBatch` (what
//! it does) against the compact protobuf alternative, `repeated` id and key fields
//! (`benches/proto/member_rows.proto`). One million members in messages of 65,536, encoded as
//! the server does and decoded as a client does, for integer and for string (UUID) user ids.
//!
//!     cargo bench -p cohort-benches --bench activation_encoding
//!
//! The wire size of each variant is printed before the timings.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use cohort_proto::v1::UsersBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

const MEMBERS: usize = 1_000_000;
const BATCH_ROWS: usize = 65_536;

/// The protobuf alternative: the same users as packed repeated fields, one of the two id
/// fields filled. Mirrors `benches/proto/member_rows.proto`.
#[derive(Clone, PartialEq, Message)]
struct MemberRows {
    #[prost(string, tag = "1")]
    segment: String,
    #[prost(int64, tag = "2")]
    version: i64,
    #[prost(string, repeated, tag = "3")]
    user_id_text: Vec<String>,
    #[prost(int64, repeated, tag = "4")]
    user_id_number: Vec<i64>,
    #[prost(int64, repeated, tag = "5")]
    user_key: Vec<i64>,
    #[prost(bool, tag = "6")]
    version_complete: bool,
}

/// Members as the engine hands them to the service: user_id and a dense user_key.
fn members(text_ids: bool) -> RecordBatch {
    let keys = Int64Array::from_iter_values((0..MEMBERS as i64).map(|k| k * 3));
    let ids: ArrayRef = if text_ids {
        Arc::new(StringArray::from_iter_values((0..MEMBERS as u64).map(
            |i| {
                let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                format!(
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    h >> 32,
                    (h >> 16) & 0xffff,
                    h & 0xfff,
                    (h >> 20) & 0xfff,
                    i
                )
            },
        )))
    } else {
        Arc::new(Int64Array::from_iter_values(
            (0..MEMBERS as i64).map(|i| 10_000_000 + i * 7),
        ))
    };
    let schema = Schema::new(vec![
        Field::new("user_id", ids.data_type().clone(), false),
        Field::new("user_key", DataType::Int64, false),
    ]);
    RecordBatch::try_new(Arc::new(schema), vec![ids, Arc::new(keys)]).unwrap()
}

fn slices(users: &RecordBatch) -> impl Iterator<Item = RecordBatch> + '_ {
    (0..users.num_rows())
        .step_by(BATCH_ROWS)
        .map(|start| users.slice(start, BATCH_ROWS.min(users.num_rows() - start)))
}

fn arrow_messages(users: &RecordBatch) -> Vec<Vec<u8>> {
    slices(users)
        .map(|slice| {
            let mut ipc = Vec::new();
            let mut writer = StreamWriter::try_new(&mut ipc, &slice.schema()).unwrap();
            writer.write(&slice).unwrap();
            writer.finish().unwrap();
            drop(writer);
            UsersBatch {
                segment: "bench".into(),
                version: 1,
                committed_at_micros: 0,
                arrow_ipc: ipc,
                version_complete: false,
            }
            .encode_to_vec()
        })
        .collect()
}

/// What a client does with each message: decode it and read every user's id and key.
fn arrow_consume(messages: &[Vec<u8>]) -> (usize, i64) {
    let (mut users, mut checksum) = (0, 0i64);
    for bytes in messages {
        let message = UsersBatch::decode(bytes.as_slice()).unwrap();
        for batch in StreamReader::try_new(message.arrow_ipc.as_slice(), None).unwrap() {
            let batch = batch.unwrap();
            users += batch.num_rows();
            checksum = checksum.wrapping_add(id_checksum(batch.column(0)));
            checksum = checksum.wrapping_add(
                batch
                    .column(1)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .sum::<i64>(),
            );
        }
    }
    (users, checksum)
}

fn id_checksum(ids: &ArrayRef) -> i64 {
    match ids.data_type() {
        DataType::Utf8 => ids
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(|s| s.len() as i64)
            .sum(),
        _ => ids.as_primitive::<Int64Type>().values().iter().sum(),
    }
}

fn protobuf_messages(users: &RecordBatch) -> Vec<Vec<u8>> {
    slices(users)
        .map(|slice| {
            let ids = slice.column(0);
            let (user_id_text, user_id_number) = match ids.data_type() {
                DataType::Utf8 => (
                    ids.as_string::<i32>()
                        .iter()
                        .map(|s| s.unwrap_or_default().to_string())
                        .collect(),
                    Vec::new(),
                ),
                _ => (
                    Vec::new(),
                    ids.as_primitive::<Int64Type>().values().to_vec(),
                ),
            };
            MemberRows {
                segment: "bench".into(),
                version: 1,
                user_id_text,
                user_id_number,
                user_key: slice
                    .column(1)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec(),
                version_complete: false,
            }
            .encode_to_vec()
        })
        .collect()
}

fn protobuf_consume(messages: &[Vec<u8>]) -> (usize, i64) {
    let (mut users, mut checksum) = (0, 0i64);
    for bytes in messages {
        let rows = MemberRows::decode(bytes.as_slice()).unwrap();
        users += rows.user_key.len();
        checksum = checksum.wrapping_add(rows.user_id_text.iter().map(|s| s.len() as i64).sum());
        checksum = checksum.wrapping_add(rows.user_id_number.iter().sum());
        checksum = checksum.wrapping_add(rows.user_key.iter().sum());
    }
    (users, checksum)
}

fn bench(c: &mut Criterion) {
    for (ids, text) in [("integer_ids", false), ("uuid_ids", true)] {
        let users = members(text);
        let arrow = arrow_messages(&users);
        let protobuf = protobuf_messages(&users);
        // Both carry the same users, or the comparison means nothing.
        assert_eq!(arrow_consume(&arrow), protobuf_consume(&protobuf));
        let size = |m: &[Vec<u8>]| m.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
        eprintln!(
            "{ids}: {MEMBERS} members on the wire: arrow_ipc {:.1} MiB, protobuf {:.1} MiB",
            size(&arrow),
            size(&protobuf)
        );
        let mut group = c.benchmark_group(format!("activation_1m_members/{ids}"));
        group.throughput(Throughput::Elements(MEMBERS as u64));
        group.sample_size(10);
        group.bench_function("arrow_ipc", |b| {
            b.iter(|| arrow_consume(&arrow_messages(&users)))
        });
        group.bench_function("protobuf", |b| {
            b.iter(|| protobuf_consume(&protobuf_messages(&users)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Roaring bitmap audience algebra, with StarRocks' function names and NULL rules.
//!
//! A bitmap is a set of user keys (unsigned 64-bit integers), stored as `Binary` in the
//! portable serialization of a 64-bit roaring bitmap (`roaring::RoaringTreemap`), so bitmaps
//! written by one process are read by any other and by other roaring implementations.
//!
//! | function | result |
//! |---|---|
//! | `to_bitmap(id)` | bitmap of one id; NULL -> NULL |
//! | `bitmap_and(b1, b2, ...)`, `bitmap_or`, `bitmap_xor` | intersection / union / symmetric difference; any NULL -> NULL |
//! | `bitmap_andnot(b1, b2, ...)` | `b1` without the ids of the others; any NULL -> NULL |
//! | `bitmap_cardinality(b)` | number of ids (Int64); NULL -> 0, as StarRocks' `bitmap_count` |
//! | `bitmap_contains(b, id)` | whether `id` is in `b`; NULL in either -> NULL |
//! | `bitmap_to_array(b)` | the ids ascending, `List<UInt64>`; NULL -> NULL |
//! | `bitmap_agg(id)` aggregate | bitmap of the group's non-NULL ids (empty if none) |
//! | `bitmap_union(b)` aggregate | union of the group's non-NULL bitmaps (empty if none) |
//! | `bitmap_intersect(b)` aggregate | intersection of the non-NULL bitmaps (NULL if none) |
//! | `intersect_count(b, col, v1, v2, ...)` aggregate | ids in the union of the bitmaps of rows with `col = v1`, and in that of `col = v2`, ... (Int64) |
//!
//! Ids are integers of any width; a negative id is an error (bitmaps hold unsigned ids), as is a
//! `Binary` value that is not a serialized bitmap. Neither ever panics.
//!
//! ```sql
//! SELECT bitmap_cardinality(bitmap_andnot(
//!     (SELECT bitmap_agg(user_id) FROM events WHERE event = 'purchase'),
//!     (SELECT bitmap_agg(user_id) FROM events WHERE event = 'refund')));
//! ```

mod aggregate;
pub mod expression;
mod scalar;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
pub use roaring::RoaringTreemap;

pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    scalar::functions()
}

pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    aggregate::functions()
}

/// Serializes `bitmap` in the portable format.
pub fn encode(bitmap: &RoaringTreemap) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    bitmap
        .serialize_into(&mut bytes)
        .expect("writing to a Vec cannot fail");
    bytes
}

/// Reads a serialized bitmap; anything else is an error naming `function`.
pub fn decode(function: &str, bytes: &[u8]) -> Result<RoaringTreemap> {
    match RoaringTreemap::deserialize_from(bytes) {
        Ok(bitmap) => Ok(bitmap),
        Err(e) => exec_err!("{function}: the value is not a valid bitmap ({e})"),
    }
}

/// Whether `data_type` can hold bitmaps (or is a NULL literal).
pub fn is_bitmap_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
    )
}

pub fn check_bitmap_arg(function: &str, position: usize, data_type: &DataType) -> Result<()> {
    if is_bitmap_type(data_type) {
        Ok(())
    } else {
        plan_err!("{function}: argument {position} must be a bitmap (binary), got {data_type}")
    }
}

pub fn check_id_arg(function: &str, position: usize, data_type: &DataType) -> Result<()> {
    if data_type.is_integer() || *data_type == DataType::Null {
        Ok(())
    } else {
        plan_err!("{function}: argument {position} must be an integer id, got {data_type}")
    }
}

/// A column of bitmaps as `Binary`, whatever binary type it arrived in.
pub fn binary_column(array: &ArrayRef) -> Result<BinaryArray> {
    Ok(cast(array, &DataType::Binary)?.as_binary::<i32>().clone())
}

/// Each row's bitmap, decoded (NULL stays `None`).
pub fn decode_rows(function: &str, array: &ArrayRef) -> Result<Vec<Option<RoaringTreemap>>> {
    let binary = binary_column(array)?;
    binary
        .iter()
        .map(|bytes| bytes.map(|b| decode(function, b)).transpose())
        .collect()
}

/// Each row's id as `u64` (NULL stays `None`); negative ids are an error.
pub fn id_rows(function: &str, array: &ArrayRef) -> Result<Vec<Option<u64>>> {
    match array.data_type() {
        DataType::UInt64 => Ok(array.as_primitive::<UInt64Type>().iter().collect()),
        DataType::Null => Ok(vec![None; array.len()]),
        t if t.is_integer() => {
            let ids = cast(array, &DataType::Int64)?;
            ids.as_primitive::<Int64Type>()
                .iter()
                .map(|id| match id {
                    Some(id) if id < 0 => exec_err!(
                        "{function}: id {id} is negative; bitmap ids are 0 to {}",
                        u64::MAX
                    ),
                    id => Ok(id.map(|id| id as u64)),
                })
                .collect()
        }
        other => exec_err!("{function}: ids must be integers, got {other}"),
    }
}

/// Encodes optional bitmaps as a `Binary` column.
pub fn encode_rows<'a>(bitmaps: impl IntoIterator<Item = Option<&'a RoaringTreemap>>) -> ArrayRef {
    let mut builder = BinaryBuilder::new();
    for bitmap in bitmaps {
        match bitmap {
            Some(bitmap) => builder.append_value(encode(bitmap)),
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_ids_above_32_bits() {
        let bitmap: RoaringTreemap = [0, 7, 1 << 40, u64::MAX].into_iter().collect();
        assert_eq!(decode("t", &encode(&bitmap)).unwrap(), bitmap);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x01",
            b"not a bitmap",
            &[0xff; 64],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        ] {
            assert!(decode("t", bytes).is_err(), "{bytes:?}");
        }
    }
}

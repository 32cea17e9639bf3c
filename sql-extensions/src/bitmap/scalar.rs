//! Scalar bitmap functions (see the module table in `bitmap/mod.rs`).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, ListArray, UInt64Array};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::{RoaringTreemap, check_bitmap_arg, check_id_arg, decode_rows, encode_rows, id_rows};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    ToBitmap,
    And,
    Or,
    Xor,
    AndNot,
    Cardinality,
    Contains,
    ToArray,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ToBitmap => "to_bitmap",
            Kind::And => "bitmap_and",
            Kind::Or => "bitmap_or",
            Kind::Xor => "bitmap_xor",
            Kind::AndNot => "bitmap_andnot",
            Kind::Cardinality => "bitmap_cardinality",
            Kind::Contains => "bitmap_contains",
            Kind::ToArray => "bitmap_to_array",
        }
    }
}

pub fn functions() -> Vec<Arc<ScalarUDF>> {
    [
        Kind::ToBitmap,
        Kind::And,
        Kind::Or,
        Kind::Xor,
        Kind::AndNot,
        Kind::Cardinality,
        Kind::Contains,
        Kind::ToArray,
    ]
    .into_iter()
    .map(|kind| Arc::new(ScalarUDF::from(BitmapFunction::new(kind))))
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BitmapFunction {
    kind: Kind,
    signature: Signature,
}

impl BitmapFunction {
    fn new(kind: Kind) -> Self {
        let signature = match kind {
            Kind::And | Kind::Or | Kind::Xor | Kind::AndNot => {
                Signature::variadic_any(Volatility::Immutable)
            }
            Kind::Contains => Signature::any(2, Volatility::Immutable),
            _ => Signature::any(1, Volatility::Immutable),
        };
        Self { kind, signature }
    }
}

fn id_list_field() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::UInt64, false))
}

/// Combines the bitmaps of one row; any NULL makes the row NULL.
fn combine(
    kind: Kind,
    bitmaps: &mut dyn Iterator<Item = Option<RoaringTreemap>>,
) -> Option<RoaringTreemap> {
    let mut result = bitmaps.next()??;
    for bitmap in bitmaps {
        let bitmap = bitmap?;
        match kind {
            Kind::And => result &= bitmap,
            Kind::Or => result |= bitmap,
            Kind::Xor => result ^= bitmap,
            _ => result -= bitmap,
        }
    }
    Some(result)
}

impl BitmapFunction {
    fn rows(&self, args: &[ArrayRef]) -> Result<ArrayRef> {
        let name = self.kind.name();
        Ok(match self.kind {
            Kind::ToBitmap => {
                let ids = id_rows(name, &args[0])?;
                let bitmaps: Vec<Option<RoaringTreemap>> = ids
                    .into_iter()
                    .map(|id| id.map(|id| std::iter::once(id).collect()))
                    .collect();
                encode_rows(bitmaps.iter().map(Option::as_ref))
            }
            Kind::And | Kind::Or | Kind::Xor | Kind::AndNot => {
                let columns = args
                    .iter()
                    .map(|a| decode_rows(name, a))
                    .collect::<Result<Vec<_>>>()?;
                let rows = args.first().map_or(0, |a| a.len());
                let bitmaps: Vec<Option<RoaringTreemap>> = (0..rows)
                    .map(|row| {
                        combine(
                            self.kind,
                            &mut columns.iter().map(|column| column[row].clone()),
                        )
                    })
                    .collect();
                encode_rows(bitmaps.iter().map(Option::as_ref))
            }
            Kind::Cardinality => {
                let counts = decode_rows(name, &args[0])?
                    .into_iter()
                    .map(|b| b.map_or(0, |b| b.len() as i64));
                Arc::new(Int64Array::from_iter_values(counts))
            }
            Kind::Contains => {
                let bitmaps = decode_rows(name, &args[0])?;
                let ids = id_rows(name, &args[1])?;
                let found = bitmaps
                    .iter()
                    .zip(ids)
                    .map(|(bitmap, id)| Some(bitmap.as_ref()?.contains(id?)));
                Arc::new(found.collect::<BooleanArray>())
            }
            Kind::ToArray => {
                let bitmaps = decode_rows(name, &args[0])?;
                let lengths = bitmaps
                    .iter()
                    .map(|b| b.as_ref().map_or(0, |b| b.len() as usize));
                let offsets = OffsetBuffer::from_lengths(lengths);
                let values =
                    UInt64Array::from_iter_values(bitmaps.iter().flatten().flat_map(|b| b.iter()));
                let nulls = NullBuffer::from_iter(bitmaps.iter().map(Option::is_some));
                Arc::new(ListArray::try_new(
                    id_list_field(),
                    offsets,
                    Arc::new(values),
                    Some(nulls),
                )?)
            }
        })
    }
}

impl ScalarUDFImpl for BitmapFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let name = self.kind.name();
        match self.kind {
            Kind::ToBitmap => {
                check_id_arg(name, 1, &arg_types[0])?;
                Ok(DataType::Binary)
            }
            Kind::And | Kind::Or | Kind::Xor | Kind::AndNot => {
                if arg_types.len() < 2 {
                    return plan_err!("{name} takes two or more bitmaps, got {}", arg_types.len());
                }
                for (i, t) in arg_types.iter().enumerate() {
                    check_bitmap_arg(name, i + 1, t)?;
                }
                Ok(DataType::Binary)
            }
            Kind::Cardinality => {
                check_bitmap_arg(name, 1, &arg_types[0])?;
                Ok(DataType::Int64)
            }
            Kind::Contains => {
                check_bitmap_arg(name, 1, &arg_types[0])?;
                check_id_arg(name, 2, &arg_types[1])?;
                Ok(DataType::Boolean)
            }
            Kind::ToArray => {
                check_bitmap_arg(name, 1, &arg_types[0])?;
                Ok(DataType::List(id_list_field()))
            }
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // `bitmap_contains(<one audience>, user_key)` filters rows: decode the bitmap once.
        if let (Kind::Contains, [ColumnarValue::Scalar(bitmap), ColumnarValue::Array(ids)]) =
            (self.kind, args.args.as_slice())
        {
            let name = self.kind.name();
            let bitmap = decode_rows(name, &bitmap.to_array()?)?.pop().flatten();
            let ids = id_rows(name, ids)?;
            let found = ids
                .into_iter()
                .map(|id| Some(bitmap.as_ref()?.contains(id?)));
            return Ok(ColumnarValue::Array(Arc::new(
                found.collect::<BooleanArray>(),
            )));
        }
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let result = self.rows(&arrays)?;
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

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

/// A bitmap argument, decoded: once for a constant (an audience tested against every row),
/// else once per row.
enum BitmapArg {
    Constant(Option<RoaringTreemap>),
    Rows(Vec<Option<RoaringTreemap>>),
}

impl BitmapArg {
    fn new(function: &str, arg: &ColumnarValue) -> Result<Self> {
        Ok(match arg {
            ColumnarValue::Scalar(bitmap) => {
                Self::Constant(decode_rows(function, &bitmap.to_array()?)?.pop().flatten())
            }
            ColumnarValue::Array(bitmaps) => Self::Rows(decode_rows(function, bitmaps)?),
        })
    }

    fn get(&self, row: usize) -> Option<&RoaringTreemap> {
        match self {
            Self::Constant(bitmap) => bitmap.as_ref(),
            Self::Rows(bitmaps) => bitmaps[row].as_ref(),
        }
    }
}

impl BitmapFunction {
    /// The results of `rows` rows; constant arguments stand for every row.
    fn rows(&self, args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
        let name = self.kind.name();
        let bitmap_args =
            || -> Result<Vec<BitmapArg>> { args.iter().map(|a| BitmapArg::new(name, a)).collect() };
        let ids = |arg: &ColumnarValue| id_rows(name, &arg.to_array(rows)?);
        Ok(match self.kind {
            Kind::ToBitmap => {
                let bitmaps: Vec<Option<RoaringTreemap>> = ids(&args[0])?
                    .into_iter()
                    .map(|id| id.map(|id| std::iter::once(id).collect()))
                    .collect();
                encode_rows(bitmaps.iter().map(Option::as_ref))
            }
            Kind::And | Kind::Or | Kind::Xor | Kind::AndNot => {
                let columns = bitmap_args()?;
                let bitmaps: Vec<Option<RoaringTreemap>> = (0..rows)
                    .map(|row| {
                        combine(
                            self.kind,
                            &mut columns.iter().map(|column| column.get(row).cloned()),
                        )
                    })
                    .collect();
                encode_rows(bitmaps.iter().map(Option::as_ref))
            }
            Kind::Cardinality => {
                let bitmaps = BitmapArg::new(name, &args[0])?;
                let counts = (0..rows).map(|row| bitmaps.get(row).map_or(0, |b| b.len() as i64));
                Arc::new(Int64Array::from_iter_values(counts))
            }
            Kind::Contains => {
                let bitmaps = BitmapArg::new(name, &args[0])?;
                let found = ids(&args[1])?
                    .into_iter()
                    .enumerate()
                    .map(|(row, id)| Some(bitmaps.get(row)?.contains(id?)));
                Arc::new(found.collect::<BooleanArray>())
            }
            Kind::ToArray => {
                let bitmaps = BitmapArg::new(name, &args[0])?;
                let bitmaps: Vec<Option<&RoaringTreemap>> =
                    (0..rows).map(|row| bitmaps.get(row)).collect();
                let lengths = bitmaps.iter().map(|b| b.map_or(0, |b| b.len() as usize));
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
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

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
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let result = self.rows(&args.args, rows)?;
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

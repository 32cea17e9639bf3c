//! `sum_for_each(list) -> list`, as ClickHouse's `sumForEach`: element-wise sums of arrays.
//!
//! Element k of the result is the sum of element k of every input array; arrays of different
//! lengths contribute to the elements they have, so the result is as long as the longest input.
//! NULL arrays and NULL elements add nothing. Integers sum as Int64 (unsigned as UInt64),
//! floats as Float64; integer sums wrap on overflow, as in ClickHouse.
//!
//! ```sql
//! SELECT sum_for_each(retention(event = 'signup', event = 'login')) ...
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, PrimitiveArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, FieldRef, Float64Type, Int64Type, UInt64Type,
};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(SumForEach::new()))]
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SumForEach {
    signature: Signature,
}

impl SumForEach {
    pub fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for SumForEach {
    fn default() -> Self {
        Self::new()
    }
}

/// The element type sums are kept in for an input element type.
fn sum_type(element: &DataType) -> Option<DataType> {
    match element {
        t if t.is_unsigned_integer() => Some(DataType::UInt64),
        t if t.is_signed_integer() => Some(DataType::Int64),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(DataType::Float64),
        DataType::Null => Some(DataType::Int64),
        _ => None,
    }
}

fn list_of(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(element, true)))
}

impl AggregateUDFImpl for SumForEach {
    fn name(&self) -> &str {
        "sum_for_each"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let element = match &arg_types[0] {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                f.data_type()
            }
            other => return plan_err!("sum_for_each takes an array of numbers, got {other}"),
        };
        match sum_type(element) {
            Some(t) => Ok(list_of(t)),
            None => plan_err!("sum_for_each takes an array of numbers, got an array of {element}"),
        }
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[sums]", args.name),
            args.return_type().clone(),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let DataType::List(field) = args.return_type() else {
            return plan_err!(
                "sum_for_each: unexpected return type {}",
                args.return_type()
            );
        };
        Ok(match field.data_type() {
            DataType::UInt64 => Box::new(Sums::<UInt64Type>::default()),
            DataType::Float64 => Box::new(Sums::<Float64Type>::default()),
            _ => Box::new(Sums::<Int64Type>::default()),
        })
    }
}

struct Sums<T: ArrowPrimitiveType> {
    sums: Vec<T::Native>,
}

impl<T: ArrowPrimitiveType> std::fmt::Debug for Sums<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sums")
            .field("len", &self.sums.len())
            .finish()
    }
}

impl<T: ArrowPrimitiveType> Default for Sums<T> {
    fn default() -> Self {
        Self { sums: Vec::new() }
    }
}

impl<T: ArrowPrimitiveType> Sums<T>
where
    T::Native: WrappingAdd,
{
    fn add_lists(&mut self, lists: &ArrayRef) -> Result<()> {
        // Fixed-size and large lists, and narrower element types, are read as List<T>.
        let lists = cast(lists, &list_of(T::DATA_TYPE))?;
        let lists = lists.as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_null(i) {
                continue;
            }
            let values = lists.value(i);
            let values: &PrimitiveArray<T> = values.as_primitive();
            if self.sums.len() < values.len() {
                self.sums.resize(values.len(), T::Native::default());
            }
            for (k, value) in values.iter().enumerate() {
                if let Some(v) = value {
                    self.sums[k] = self.sums[k].wrapping_add_(v);
                }
            }
        }
        Ok(())
    }

    fn array(&self) -> Result<ArrayRef> {
        let values = PrimitiveArray::<T>::from_iter_values(self.sums.iter().copied());
        let field = Arc::new(Field::new_list_field(T::DATA_TYPE, true));
        Ok(Arc::new(ListArray::try_new(
            field,
            OffsetBuffer::from_lengths([self.sums.len()]),
            Arc::new(values),
            None,
        )?))
    }
}

/// Integer sums wrap like ClickHouse's; float sums add normally.
trait WrappingAdd: Copy {
    fn wrapping_add_(self, other: Self) -> Self;
}

impl WrappingAdd for i64 {
    fn wrapping_add_(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}

impl WrappingAdd for u64 {
    fn wrapping_add_(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}

impl WrappingAdd for f64 {
    fn wrapping_add_(self, other: Self) -> Self {
        self + other
    }
}

impl<T: ArrowPrimitiveType> Accumulator for Sums<T>
where
    T::Native: WrappingAdd,
{
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add_lists(&values[0])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        ScalarValue::try_from_array(&self.array()?, 0)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.add_lists(&states[0])
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.sums.capacity() * size_of::<T::Native>()
    }
}

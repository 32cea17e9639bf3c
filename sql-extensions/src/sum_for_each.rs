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
    ArrowPrimitiveType, DataType, Field, FieldRef, Float16Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

use crate::common::list_column;

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
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

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
    T::Native: SumValue,
{
    fn add_lists(&mut self, lists: &ArrayRef) -> Result<()> {
        // Large and fixed-size lists are read as List of the same elements (rare, small).
        let lists = match lists.data_type() {
            DataType::List(_) => Arc::clone(lists),
            DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                cast(lists, &list_of(f.data_type().clone()))?
            }
            other => return plan_err!("sum_for_each takes an array of numbers, got {other}"),
        };
        let lists = lists.as_list::<i32>();
        // Elements are widened one by one while adding: casting the whole child array first
        // costs more than the sums themselves.
        match lists.value_type() {
            DataType::UInt8 => {
                self.add_elements::<UInt8Type>(lists, |v| SumValue::from_u64(v.into()))
            }
            DataType::UInt16 => {
                self.add_elements::<UInt16Type>(lists, |v| SumValue::from_u64(v.into()))
            }
            DataType::UInt32 => {
                self.add_elements::<UInt32Type>(lists, |v| SumValue::from_u64(v.into()))
            }
            DataType::UInt64 => self.add_elements::<UInt64Type>(lists, SumValue::from_u64),
            DataType::Int8 => {
                self.add_elements::<Int8Type>(lists, |v| SumValue::from_i64(v.into()))
            }
            DataType::Int16 => {
                self.add_elements::<Int16Type>(lists, |v| SumValue::from_i64(v.into()))
            }
            DataType::Int32 => {
                self.add_elements::<Int32Type>(lists, |v| SumValue::from_i64(v.into()))
            }
            DataType::Int64 => self.add_elements::<Int64Type>(lists, SumValue::from_i64),
            DataType::Float16 => {
                self.add_elements::<Float16Type>(lists, |v| SumValue::from_f64(v.to_f64()))
            }
            DataType::Float32 => {
                self.add_elements::<Float32Type>(lists, |v| SumValue::from_f64(v.into()))
            }
            DataType::Float64 => self.add_elements::<Float64Type>(lists, SumValue::from_f64),
            // All-NULL elements add nothing but still make the result as long as the longest list.
            DataType::Null => self.add_elements::<Int64Type>(lists, SumValue::from_i64),
            other => plan_err!("sum_for_each takes an array of numbers, got an array of {other}"),
        }
    }

    fn add_elements<I: ArrowPrimitiveType>(
        &mut self,
        lists: &ListArray,
        widen: impl Fn(I::Native) -> T::Native,
    ) -> Result<()> {
        let values = lists.values();
        let elements = (values.data_type() != &DataType::Null).then(|| values.as_primitive::<I>());
        let offsets = lists.value_offsets();
        for list in 0..lists.len() {
            if lists.is_null(list) {
                continue;
            }
            let (start, end) = (offsets[list] as usize, offsets[list + 1] as usize);
            if self.sums.len() < end - start {
                self.sums.resize(end - start, T::Native::default());
            }
            let Some(elements) = elements else { continue };
            for (sum, i) in self.sums.iter_mut().zip(start..end) {
                if elements.is_valid(i) {
                    *sum = sum.wrapping_add_(widen(elements.value(i)));
                }
            }
        }
        Ok(())
    }

    fn array(&self) -> Result<ArrayRef> {
        let values = PrimitiveArray::<T>::from_iter_values(self.sums.iter().copied());
        list_column(
            OffsetBuffer::from_lengths([self.sums.len()]),
            Arc::new(values),
            true,
        )
    }
}

/// A sum's native type: integer sums wrap like ClickHouse's; float sums add normally. Each sum
/// type is only fed elements of its own kind (see `sum_type`), so the other conversions never run.
trait SumValue: Copy + Default {
    fn wrapping_add_(self, other: Self) -> Self;
    fn from_u64(value: u64) -> Self;
    fn from_i64(value: i64) -> Self;
    fn from_f64(value: f64) -> Self;
}

impl SumValue for i64 {
    fn wrapping_add_(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn from_u64(value: u64) -> Self {
        value as i64
    }
    fn from_i64(value: i64) -> Self {
        value
    }
    fn from_f64(value: f64) -> Self {
        value as i64
    }
}

impl SumValue for u64 {
    fn wrapping_add_(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn from_u64(value: u64) -> Self {
        value
    }
    fn from_i64(value: i64) -> Self {
        value as u64
    }
    fn from_f64(value: f64) -> Self {
        value as u64
    }
}

impl SumValue for f64 {
    fn wrapping_add_(self, other: Self) -> Self {
        self + other
    }
    fn from_u64(value: u64) -> Self {
        value as f64
    }
    fn from_i64(value: i64) -> Self {
        value as f64
    }
    fn from_f64(value: f64) -> Self {
        value
    }
}

impl<T: ArrowPrimitiveType> Accumulator for Sums<T>
where
    T::Native: SumValue,
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

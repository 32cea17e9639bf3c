//! `retention(cond1, ..., condN) -> List<UInt8>`, as ClickHouse's `retention`.
//!
//! Per group, element 1 is 1 if any row met `cond1`; element k (k > 1) is 1 if any row met
//! `cond1` and any row met `condk` (not necessarily the same row). NULL counts as false. Up to
//! 32 conditions, at least 2 (as in ClickHouse). Summed with `sum_for_each`, the arrays give a cohort's retention curve:
//!
//! ```sql
//! SELECT sum_for_each(r) FROM (
//!   SELECT user_id, retention(event_date = DATE '2026-09-01',
//!                             event_date = DATE '2026-09-02',
//!                             event_date = DATE '2026-09-08') AS r
//!   FROM events GROUP BY user_id);
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, UInt8Array, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::common::{SingleGroup, filtered_out};

const MAX_CONDITIONS: usize = 32;

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(Retention::new()))]
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Retention {
    signature: Signature,
}

impl Retention {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::new()
    }
}

fn item_field() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::UInt8, false))
}

/// Bit i set: some row met condition i+1.
fn row_mask(conditions: &[Option<&BooleanArray>], row: usize) -> u32 {
    conditions.iter().enumerate().fold(0, |mask, (i, c)| {
        if c.is_some_and(|c| c.is_valid(row) && c.value(row)) {
            mask | (1 << i)
        } else {
            mask
        }
    })
}

fn result(masks: &[u32], n: usize) -> Result<ArrayRef> {
    let values = UInt8Array::from_iter_values(masks.iter().flat_map(|&mask| {
        let first = mask & 1;
        (0..n).map(move |k| {
            if k == 0 {
                first as u8
            } else {
                (first & (mask >> k)) as u8
            }
        })
    }));
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(n, masks.len()));
    Ok(Arc::new(ListArray::try_new(
        item_field(),
        offsets,
        Arc::new(values),
        None,
    )?))
}

impl AggregateUDFImpl for Retention {
    fn name(&self) -> &str {
        "retention"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() < 2 {
            return plan_err!(
                "retention needs at least two conditions: retention(cond1, cond2, ..., condN)"
            );
        }
        if arg_types.len() > MAX_CONDITIONS {
            return plan_err!(
                "retention takes at most {MAX_CONDITIONS} conditions, got {}",
                arg_types.len()
            );
        }
        for (i, t) in arg_types.iter().enumerate() {
            if !matches!(t, DataType::Boolean | DataType::Null) {
                return plan_err!("retention: condition {} must be boolean, got {t}", i + 1);
            }
        }
        Ok(DataType::List(item_field()))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[mask]", args.name),
            DataType::UInt32,
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleGroup::new(RetentionGroups {
            n: args.exprs.len(),
            masks: Vec::new(),
        })?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(RetentionGroups {
            n: args.exprs.len(),
            masks: Vec::new(),
        }))
    }
}

fn conditions(values: &[ArrayRef]) -> Vec<Option<&BooleanArray>> {
    values.iter().map(|v| v.as_boolean_opt()).collect()
}

struct RetentionGroups {
    n: usize,
    masks: Vec<u32>,
}

impl GroupsAccumulator for RetentionGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.masks.resize(total_num_groups, 0);
        let conds = conditions(values);
        for (row, &group) in group_indices.iter().enumerate() {
            if !filtered_out(opt_filter, row) {
                self.masks[group] |= row_mask(&conds, row);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        result(&emit_to.take_needed(&mut self.masks), self.n)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(UInt32Array::from(
            emit_to.take_needed(&mut self.masks),
        ))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.masks.resize(total_num_groups, 0);
        let masks = values[0].as_primitive::<UInt32Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if masks.is_valid(row) {
                self.masks[group] |= masks.value(row);
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let conds = conditions(values);
        let rows = values.first().map_or(0, |v| v.len());
        let masks = (0..rows).map(|row| {
            if filtered_out(opt_filter, row) {
                0
            } else {
                row_mask(&conds, row)
            }
        });
        Ok(vec![Arc::new(UInt32Array::from_iter_values(masks))])
    }

    fn size(&self) -> usize {
        self.masks.capacity() * size_of::<u32>()
    }
}

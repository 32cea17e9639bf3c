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

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt8Array, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::common::{SingleGroup, list_column};
use crate::conditions::{check_conditions, condition_masks, pack_conditions};

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(Retention::new()))]
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Retention {
    signature: Signature,
    /// Set when the call's conditions arrive packed, one bit each: see [`crate::conditions`].
    packed: Option<usize>,
}

impl Retention {
    pub fn new() -> Self {
        Self::with_packing(None)
    }

    fn with_packing(packed: Option<usize>) -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
            packed,
        }
    }

    fn conditions(&self, args: &AccumulatorArgs) -> usize {
        self.packed.unwrap_or(args.exprs.len())
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
    list_column(offsets, Arc::new(values), false)
}

impl AggregateUDFImpl for Retention {
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

    fn name(&self) -> &str {
        "retention"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() < 2 && self.packed.is_none() {
            return plan_err!(
                "retention needs at least two conditions: retention(cond1, cond2, ..., condN)"
            );
        }
        check_conditions("retention", arg_types, self.packed)?;
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
            n: self.conditions(&args),
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
            n: self.conditions(&args),
            masks: Vec::new(),
        }))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.packed.is_none().then(|| {
            Box::new(|call: AggregateFunction, info: &SimplifyContext| {
                pack_conditions(call, 0, info, |n| {
                    AggregateUDF::from(Retention::with_packing(Some(n)))
                })
            }) as _
        })
    }
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
        let rows = condition_masks(values, group_indices.len(), opt_filter);
        // Rows of a group mostly come in runs (input sorted by user): one write per run, not a
        // chain of read-modify-writes on the same slot.
        let mut run: Option<(usize, u32)> = None;
        for (&mask, &group) in rows.iter().zip(group_indices) {
            match &mut run {
                Some((current, bits)) if *current == group => *bits |= mask,
                _ => {
                    if let Some((current, bits)) = run.replace((group, mask)) {
                        self.masks[current] |= bits;
                    }
                }
            }
        }
        if let Some((current, bits)) = run {
            self.masks[current] |= bits;
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
        let rows = values.first().map_or(0, |v| v.len());
        Ok(vec![Arc::new(UInt32Array::new(
            condition_masks(values, rows, opt_filter),
            None,
        ))])
    }

    fn size(&self) -> usize {
        self.masks.capacity() * size_of::<u32>()
    }
}

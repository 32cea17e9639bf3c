//! Bitmap aggregates: `bitmap_agg`, `bitmap_union`, `bitmap_intersect`, `intersect_count`.
//!
//! Every group keeps one bitmap per "slot" (one slot, or one per filter value of
//! `intersect_count`); `None` means the slot has seen no input, which matters for intersections.
//! States are the slots' serialized bitmaps, NULL for `None`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, Scalar};
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use super::{RoaringTreemap, check_bitmap_arg, check_id_arg, decode_rows, encode_rows, id_rows};
use crate::common::{SingleGroup, constant, filtered_out};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `bitmap_agg(id)`
    Agg,
    /// `bitmap_union(bitmap)`
    Union,
    /// `bitmap_intersect(bitmap)`
    Intersect,
    /// `intersect_count(bitmap, column, v1, v2, ...)`
    IntersectCount,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Agg => "bitmap_agg",
            Kind::Union => "bitmap_union",
            Kind::Intersect => "bitmap_intersect",
            Kind::IntersectCount => "intersect_count",
        }
    }

    /// How two partial bitmaps of one slot combine.
    fn intersects_slots(self) -> bool {
        self == Kind::Intersect
    }
}

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    [
        Kind::Agg,
        Kind::Union,
        Kind::Intersect,
        Kind::IntersectCount,
    ]
    .into_iter()
    .map(|kind| Arc::new(AggregateUDF::from(BitmapAggregate::new(kind))))
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BitmapAggregate {
    kind: Kind,
    signature: Signature,
}

impl BitmapAggregate {
    fn new(kind: Kind) -> Self {
        let signature = match kind {
            Kind::IntersectCount => Signature::variadic_any(Volatility::Immutable),
            _ => Signature::any(1, Volatility::Immutable),
        };
        Self { kind, signature }
    }

    fn groups(&self, args: &AccumulatorArgs) -> Result<BitmapGroups> {
        let filter_values = if self.kind == Kind::IntersectCount {
            (2..args.exprs.len())
                .map(|i| constant(self.kind.name(), args, i, "filter value").cloned())
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(BitmapGroups {
            kind: self.kind,
            slots: filter_values.len().max(1),
            filter_values,
            bitmaps: Vec::new(),
            approx_bytes: 0,
        })
    }
}

impl AggregateUDFImpl for BitmapAggregate {
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
            Kind::Agg => {
                check_id_arg(name, 1, &arg_types[0])?;
                Ok(DataType::Binary)
            }
            Kind::Union | Kind::Intersect => {
                check_bitmap_arg(name, 1, &arg_types[0])?;
                Ok(DataType::Binary)
            }
            Kind::IntersectCount => {
                if arg_types.len() < 3 {
                    return plan_err!(
                        "intersect_count(bitmap, column, value1, ...) needs a bitmap, a column and at least one value"
                    );
                }
                check_bitmap_arg(name, 1, &arg_types[0])?;
                Ok(DataType::Int64)
            }
        }
    }

    fn is_nullable(&self) -> bool {
        self.kind == Kind::Intersect
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let slots = if self.kind == Kind::IntersectCount {
            args.input_fields.len() - 2
        } else {
            1
        };
        Ok((0..slots)
            .map(|i| {
                Arc::new(Field::new(
                    format!("{}[bitmap{i}]", args.name),
                    DataType::Binary,
                    true,
                ))
            })
            .collect())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleGroup::new(self.groups(&args)?)?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.groups(&args)?))
    }
}

struct BitmapGroups {
    kind: Kind,
    slots: usize,
    /// `intersect_count`'s filter values, one per slot.
    filter_values: Vec<ScalarValue>,
    /// `slots` entries per group.
    bitmaps: Vec<Option<RoaringTreemap>>,
    /// Estimated heap bytes of the bitmaps (2 bytes per id, as in roaring's array containers,
    /// plus a fixed overhead per bitmap), kept up to date as bitmaps change.
    approx_bytes: usize,
}

fn approx_size(bitmap: &Option<RoaringTreemap>) -> usize {
    bitmap.as_ref().map_or(0, |b| 64 + 2 * b.len() as usize)
}

impl BitmapGroups {
    /// Adds `bitmap` into slot `slot` of `group`.
    fn add(&mut self, group: usize, slot: usize, bitmap: RoaringTreemap) {
        let entry = &mut self.bitmaps[group * self.slots + slot];
        let before = approx_size(entry);
        match entry {
            None => *entry = Some(bitmap),
            Some(current) if self.kind.intersects_slots() => *current &= bitmap,
            Some(current) => *current |= bitmap,
        }
        self.approx_bytes = self.approx_bytes + approx_size(entry) - before;
    }

    /// Per input row, the slot its bitmap goes to (`None`: no slot).
    fn row_slots(&self, values: &[ArrayRef]) -> Result<Vec<Option<usize>>> {
        let rows = values[0].len();
        if self.kind != Kind::IntersectCount {
            return Ok(vec![Some(0); rows]);
        }
        let mut slots = vec![None; rows];
        for (slot, value) in self.filter_values.iter().enumerate() {
            let value = value.cast_to(values[1].data_type())?;
            let matches = eq(&values[1], &Scalar::new(value.to_array()?))?;
            for row in matches.values().set_indices() {
                if matches.is_valid(row) && slots[row].is_none() {
                    slots[row] = Some(slot);
                }
            }
        }
        Ok(slots)
    }

    /// The bitmap each input row contributes.
    fn row_bitmaps(&self, values: &[ArrayRef]) -> Result<Vec<Option<RoaringTreemap>>> {
        let name = self.kind.name();
        if self.kind == Kind::Agg {
            Ok(id_rows(name, &values[0])?
                .into_iter()
                .map(|id| id.map(|id| std::iter::once(id).collect()))
                .collect())
        } else {
            decode_rows(name, &values[0])
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Option<RoaringTreemap>> {
        let taken = match emit_to {
            EmitTo::All => std::mem::take(&mut self.bitmaps),
            EmitTo::First(n) => {
                let rest = self.bitmaps.split_off(n * self.slots);
                std::mem::replace(&mut self.bitmaps, rest)
            }
        };
        self.approx_bytes -= taken.iter().map(approx_size).sum::<usize>();
        taken
    }
}

impl GroupsAccumulator for BitmapGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.bitmaps.resize(total_num_groups * self.slots, None);
        let slots = self.row_slots(values)?;
        for (row, bitmap) in self.row_bitmaps(values)?.into_iter().enumerate() {
            if let (Some(bitmap), Some(slot)) = (bitmap, slots[row])
                && !filtered_out(opt_filter, row)
            {
                self.add(group_indices[row], slot, bitmap);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let bitmaps = self.take(emit_to);
        Ok(match self.kind {
            Kind::Agg | Kind::Union => {
                let empty = RoaringTreemap::new();
                encode_rows(bitmaps.iter().map(|b| Some(b.as_ref().unwrap_or(&empty))))
            }
            Kind::Intersect => encode_rows(bitmaps.iter().map(Option::as_ref)),
            Kind::IntersectCount => {
                let counts = bitmaps.chunks(self.slots).map(|slots| {
                    let mut slots = slots.iter();
                    let first = slots.next().and_then(Option::clone).unwrap_or_default();
                    let common = slots.fold(first, |common, slot| match slot {
                        Some(slot) => common & slot,
                        None => RoaringTreemap::new(),
                    });
                    common.len() as i64
                });
                Arc::new(Int64Array::from_iter_values(counts))
            }
        })
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let bitmaps = self.take(emit_to);
        Ok((0..self.slots)
            .map(|slot| {
                encode_rows(
                    bitmaps
                        .iter()
                        .skip(slot)
                        .step_by(self.slots)
                        .map(Option::as_ref),
                )
            })
            .collect())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.bitmaps.resize(total_num_groups * self.slots, None);
        for (slot, column) in values.iter().enumerate() {
            for (row, bitmap) in decode_rows(self.kind.name(), column)?
                .into_iter()
                .enumerate()
            {
                if let Some(bitmap) = bitmap {
                    self.add(group_indices[row], slot, bitmap);
                }
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let slots = self.row_slots(values)?;
        let bitmaps = self.row_bitmaps(values)?;
        Ok((0..self.slots)
            .map(|slot| {
                encode_rows(bitmaps.iter().enumerate().map(|(row, bitmap)| {
                    (slots[row] == Some(slot) && !filtered_out(opt_filter, row))
                        .then_some(bitmap.as_ref())
                        .flatten()
                }))
            })
            .collect())
    }

    fn size(&self) -> usize {
        self.bitmaps.capacity() * size_of::<Option<RoaringTreemap>>() + self.approx_bytes
    }
}

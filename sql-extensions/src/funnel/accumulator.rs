//! Per-group funnel state: the condition matches of each group, kept as (timestamp, condition,
//! row) items in one arena shared by all groups ([`GroupLists`]). Rows that match no condition are not stored (except
//! as a marker in `strict_order` mode), which for typical funnels drops most input rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt8Array, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Int64Type, UInt8Type, UInt32Type};
use datafusion::error::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use super::level::{self, Event, Mode};
use crate::common::{condition_masks, filtered_out, list_column};
use crate::group_lists::GroupLists;
use crate::time::{event_times, to_event_time_array};

/// Everything the accumulators need to know about one call's arguments.
#[derive(Debug, Clone)]
pub struct FunnelArgs {
    pub steps: u8,
    pub window: i64,
    pub mode: Mode,
    /// Produce step timestamps (`window_funnel_steps`) instead of the level.
    pub want_chain: bool,
    pub ts_index: usize,
    pub ts_type: DataType,
}

/// Per row, bit `i` set when condition `i + 1` holds; NULL or NULL-typed conditions are false.
fn row_conditions(values: &[ArrayRef], args: &FunnelArgs, rows: usize) -> Vec<u32> {
    condition_masks(&values[args.ts_index + 1..], rows, None)
}

/// Records the matches (`mask`) of one input row (with id `row_id`) into `out`. Conditions are
/// pushed from last to first, as ClickHouse does; the scan sorts them by index anyway.
fn record_row(
    mut out: impl FnMut(Event) -> Result<()>,
    args: &FunnelArgs,
    ts: i64,
    mask: u32,
    row_id: u32,
) -> Result<()> {
    if mask == 0 {
        if args.mode.strict_order {
            out(Event {
                ts,
                cond: 0,
                row: row_id,
            })?;
        }
        return Ok(());
    }
    for index in (0..u32::BITS - mask.leading_zeros()).rev() {
        if mask & (1 << index) != 0 {
            out(Event {
                ts,
                cond: index as u8 + 1,
                row: row_id,
            })?;
        }
    }
    Ok(())
}

/// State columns: one list per group of timestamps, condition indexes and row ids.
pub fn state_fields(name: &str) -> Vec<Field> {
    let list = |item: DataType| DataType::List(Arc::new(Field::new_list_field(item, true)));
    vec![
        Field::new(format!("{name}[ts]"), list(DataType::Int64), true),
        Field::new(format!("{name}[cond]"), list(DataType::UInt8), true),
        Field::new(format!("{name}[row]"), list(DataType::UInt32), true),
    ]
}

fn state_arrays(groups: &GroupLists<Event>) -> Result<Vec<ArrayRef>> {
    let offsets = OffsetBuffer::<i32>::from_lengths((0..groups.groups()).map(|g| groups.len(g)));
    let events = (0..groups.groups()).flat_map(|g| groups.iter(g));
    let ts = Int64Array::from_iter_values(events.clone().map(|e| e.ts));
    let cond = UInt8Array::from_iter_values(events.clone().map(|e| e.cond));
    let row = UInt32Array::from_iter_values(events.map(|e| e.row));
    Ok(vec![
        list_column(offsets.clone(), Arc::new(ts), true)?,
        list_column(offsets.clone(), Arc::new(cond), true)?,
        list_column(offsets, Arc::new(row), true)?,
    ])
}

fn outputs(groups: &GroupLists<Event>, args: &FunnelArgs) -> Result<ArrayRef> {
    let mut scratch = Vec::new();
    let outcomes = (0..groups.groups()).map(|g| {
        scratch.clear();
        scratch.extend(groups.iter(g));
        level::evaluate(&mut scratch, args.steps, args.window, args.mode)
    });
    if !args.want_chain {
        return Ok(Arc::new(UInt8Array::from_iter_values(
            outcomes.map(|o| o.level),
        )));
    }
    let mut lengths = Vec::with_capacity(groups.groups());
    let mut times = Vec::new();
    for outcome in outcomes {
        lengths.push(outcome.chain.len());
        times.extend(outcome.chain);
    }
    let values = to_event_time_array(Int64Array::from(times), &args.ts_type)?;
    list_column(OffsetBuffer::from_lengths(lengths), values, true)
}

pub struct FunnelGroupsAccumulator {
    args: Arc<FunnelArgs>,
    events: GroupLists<Event>,
    /// Per group, the id the next input row gets: rows stay distinct after merges (strict_once).
    next_row: Vec<u32>,
}

impl FunnelGroupsAccumulator {
    pub fn new(args: Arc<FunnelArgs>) -> Self {
        Self {
            args,
            events: GroupLists::default(),
            next_row: Vec::new(),
        }
    }

    fn resize(&mut self, groups: usize) {
        self.events.resize(groups);
        self.next_row.resize(groups, 0);
    }

    fn take(&mut self, emit_to: EmitTo) -> Result<GroupLists<Event>> {
        emit_to.take_needed(&mut self.next_row);
        self.events.take(emit_to)
    }
}

impl GroupsAccumulator for FunnelGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let ts = event_times(&values[self.args.ts_index])?;
        let masks = row_conditions(values, &self.args, ts.len());
        for (row, &group) in group_indices.iter().enumerate() {
            if ts.is_null(row) || filtered_out(opt_filter, row) {
                continue;
            }
            let row_id = self.next_row[group];
            self.next_row[group] = row_id.saturating_add(1);
            let events = &mut self.events;
            record_row(
                |event| events.push(group, event),
                &self.args,
                ts.value(row),
                masks[row],
                row_id,
            )?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        outputs(&self.take(emit_to)?, &self.args)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        state_arrays(&self.take(emit_to)?)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        let (ts, cond, rows) = (
            values[0].as_list::<i32>(),
            values[1].as_list::<i32>(),
            values[2].as_list::<i32>(),
        );
        let (times, conds, ids) = (
            ts.values().as_primitive::<Int64Type>(),
            cond.values().as_primitive::<UInt8Type>(),
            rows.values().as_primitive::<UInt32Type>(),
        );
        let offsets = ts.value_offsets();
        for (index, &group) in group_indices.iter().enumerate() {
            if ts.is_null(index) {
                continue;
            }
            // Row ids of the other state are shifted past ours so rows stay distinct (strict_once).
            let shift = self.next_row[group];
            let mut next = shift;
            for i in offsets[index] as usize..offsets[index + 1] as usize {
                let row = shift.saturating_add(ids.value(i));
                next = next.max(row.saturating_add(1));
                self.events.push(
                    group,
                    Event {
                        ts: times.value(i),
                        cond: conds.value(i),
                        row,
                    },
                )?;
            }
            self.next_row[group] = next;
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let ts = event_times(&values[self.args.ts_index])?;
        let masks = row_conditions(values, &self.args, ts.len());
        let mut rows = GroupLists::default();
        rows.resize(ts.len());
        for (row, &mask) in masks.iter().enumerate() {
            if !ts.is_null(row) && !filtered_out(opt_filter, row) {
                record_row(
                    |event| rows.push(row, event),
                    &self.args,
                    ts.value(row),
                    mask,
                    0,
                )?;
            }
        }
        state_arrays(&rows)
    }

    fn size(&self) -> usize {
        self.events.size() + self.next_row.capacity() * size_of::<u32>()
    }
}

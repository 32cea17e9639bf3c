//! Per-group funnel state: the condition matches of each group, kept as one compact vector of
//! (timestamp, condition, row) per group. Rows that match no condition are not stored (except
//! as a marker in `strict_order` mode), which for typical funnels drops most input rows.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, UInt8Array, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, UInt8Type, UInt32Type};
use datafusion::error::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use super::level::{self, Event, Mode};
use crate::common::filtered_out;
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

#[derive(Debug, Default, Clone)]
struct GroupEvents {
    events: Vec<Event>,
    next_row: u32,
}

impl GroupEvents {
    fn size(&self) -> usize {
        self.events.capacity() * size_of::<Event>()
    }
}

/// The boolean condition columns; NULL or NULL-typed conditions count as false.
fn conditions<'a>(values: &'a [ArrayRef], args: &FunnelArgs) -> Vec<Option<&'a BooleanArray>> {
    values[args.ts_index + 1..]
        .iter()
        .map(|c| c.as_boolean_opt())
        .collect()
}

fn matches(condition: Option<&BooleanArray>, row: usize) -> bool {
    condition.is_some_and(|c| c.is_valid(row) && c.value(row))
}

/// Records the matches of input row `row` (with id `row_id`) into `out`. Conditions are pushed
/// from last to first, as ClickHouse does; the scan sorts them by index anyway.
fn record_row(
    out: &mut Vec<Event>,
    args: &FunnelArgs,
    ts: i64,
    conds: &[Option<&BooleanArray>],
    row: usize,
    row_id: u32,
) {
    let mut any = false;
    for index in (0..conds.len()).rev() {
        if matches(conds[index], row) {
            out.push(Event {
                ts,
                cond: index as u8 + 1,
                row: row_id,
            });
            any = true;
        }
    }
    if !any && args.mode.strict_order {
        out.push(Event {
            ts,
            cond: 0,
            row: row_id,
        });
    }
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

fn state_arrays(groups: &[GroupEvents]) -> Result<Vec<ArrayRef>> {
    let lengths = groups.iter().map(|g| g.events.len());
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
    let events = groups.iter().flat_map(|g| g.events.iter());
    let ts = Int64Array::from_iter_values(events.clone().map(|e| e.ts));
    let cond = UInt8Array::from_iter_values(events.clone().map(|e| e.cond));
    let row = UInt32Array::from_iter_values(events.map(|e| e.row));
    let list = |values: ArrayRef| -> Result<ArrayRef> {
        let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
        Ok(Arc::new(ListArray::try_new(
            field,
            offsets.clone(),
            values,
            None,
        )?))
    };
    Ok(vec![
        list(Arc::new(ts))?,
        list(Arc::new(cond))?,
        list(Arc::new(row))?,
    ])
}

fn merge_state(
    group: &mut GroupEvents,
    ts: &ListArray,
    cond: &ListArray,
    rows: &ListArray,
    index: usize,
) {
    if ts.is_null(index) {
        return;
    }
    let times = ts.value(index);
    let times = times.as_primitive::<arrow::datatypes::Int64Type>();
    let conds = cond.value(index);
    let conds = conds.as_primitive::<UInt8Type>();
    let ids = rows.value(index);
    let ids = ids.as_primitive::<UInt32Type>();
    // Row ids of the other state are shifted past ours so rows stay distinct (strict_once).
    let offset = group.next_row;
    let mut next = group.next_row;
    group.events.reserve(times.len());
    for i in 0..times.len() {
        let row = offset.saturating_add(ids.value(i));
        next = next.max(row.saturating_add(1));
        group.events.push(Event {
            ts: times.value(i),
            cond: conds.value(i),
            row,
        });
    }
    group.next_row = next;
}

fn outputs(groups: &mut [GroupEvents], args: &FunnelArgs) -> Result<ArrayRef> {
    let count = groups.len();
    let outcomes = groups
        .iter_mut()
        .map(|g| level::evaluate(&mut g.events, args.steps, args.window, args.mode));
    if !args.want_chain {
        return Ok(Arc::new(UInt8Array::from_iter_values(
            outcomes.map(|o| o.level),
        )));
    }
    let mut lengths = Vec::with_capacity(count);
    let mut times = Vec::new();
    for outcome in outcomes {
        lengths.push(outcome.chain.len());
        times.extend(outcome.chain);
    }
    let values = to_event_time_array(Int64Array::from(times), &args.ts_type)?;
    let field = Arc::new(Field::new_list_field(args.ts_type.clone(), true));
    Ok(Arc::new(ListArray::try_new(
        field,
        OffsetBuffer::from_lengths(lengths),
        values,
        None,
    )?))
}

pub struct FunnelGroupsAccumulator {
    args: Arc<FunnelArgs>,
    groups: Vec<GroupEvents>,
}

impl FunnelGroupsAccumulator {
    pub fn new(args: Arc<FunnelArgs>) -> Self {
        Self {
            args,
            groups: Vec::new(),
        }
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
        self.groups
            .resize_with(total_num_groups, GroupEvents::default);
        let ts = event_times(&values[self.args.ts_index])?;
        let conds = conditions(values, &self.args);
        for (row, &group_index) in group_indices.iter().enumerate() {
            if ts.is_null(row) || filtered_out(opt_filter, row) {
                continue;
            }
            let group = &mut self.groups[group_index];
            let row_id = group.next_row;
            group.next_row = group.next_row.saturating_add(1);
            record_row(
                &mut group.events,
                &self.args,
                ts.value(row),
                &conds,
                row,
                row_id,
            );
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut groups = emit_to.take_needed(&mut self.groups);
        outputs(&mut groups, &self.args)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        state_arrays(&emit_to.take_needed(&mut self.groups))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups
            .resize_with(total_num_groups, GroupEvents::default);
        let (ts, cond, rows) = (
            values[0].as_list::<i32>(),
            values[1].as_list::<i32>(),
            values[2].as_list::<i32>(),
        );
        for (index, &group_index) in group_indices.iter().enumerate() {
            merge_state(&mut self.groups[group_index], ts, cond, rows, index);
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let ts = event_times(&values[self.args.ts_index])?;
        let conds = conditions(values, &self.args);
        let groups: Vec<GroupEvents> = (0..ts.len())
            .map(|row| {
                let mut group = GroupEvents::default();
                if !ts.is_null(row)
                    && !opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row))
                {
                    record_row(&mut group.events, &self.args, ts.value(row), &conds, row, 0);
                    group.next_row = 1;
                }
                group
            })
            .collect();
        state_arrays(&groups)
    }

    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<GroupEvents>()
            + self.groups.iter().map(GroupEvents::size).sum::<usize>()
    }
}

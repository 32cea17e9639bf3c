//! Aggregates over each group's events that carry a string value, such as a page or an event
//! name: `sequence_next_node` and `event_path`.
//!
//! A row is an event when its time and its value are not NULL (a function may take rows with a
//! NULL value too) and the aggregate's `FILTER` keeps it; it records its time, its value and the conditions it meets as a bit mask. Each
//! distinct value is kept once per accumulator. A group's events are ordered by time, then by
//! value (bytewise), then by mask before the function sees them, so a result never depends on
//! the order rows arrive in, nor on how the input is split into batches and partitions. The
//! state is three lists per group: times, masks and values.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray, UInt32Array};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Int64Type, UInt32Type};
use datafusion::error::Result;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use crate::common::{
    GroupEvents, GroupsAggregate, Udaf, filtered_out, list_column, list_state_field,
};
use crate::conditions::condition_masks;
use crate::time::event_times;

/// One event: its time, the conditions it meets (bit i: condition i) and its value, an index
/// into the distinct values the function is given with it, or [`NULL_VALUE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueEvent {
    pub ts: i64,
    pub mask: u32,
    pub value: u32,
}

/// The value of an event whose value is NULL.
pub const NULL_VALUE: u32 = u32::MAX;

/// An event's value, `None` for [`NULL_VALUE`].
pub fn value_of(values: &[String], id: u32) -> Option<&str> {
    (id != NULL_VALUE).then(|| values[id as usize].as_str())
}

/// Where a call's event arguments are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventArguments {
    pub ts: usize,
    pub value: usize,
    /// The boolean condition arguments, at most 32.
    pub conditions: Range<usize>,
    /// Whether a row whose value is NULL is an event (with [`NULL_VALUE`]) or ignored.
    pub null_values: bool,
}

/// What a function over value events computes from a group's sorted events.
pub trait ValueEventFunction: Send + Sync + 'static {
    fn arguments(&self) -> &EventArguments;

    /// One result per group; `values[event.value]` is an event's value.
    fn evaluate(&self, groups: &[Vec<ValueEvent>], values: &[String]) -> Result<ArrayRef>;
}

/// An aggregate over value events: its name, result type, and how a call's arguments make
/// its function. [`ValueEventUdaf`] turns it into a DataFusion aggregate.
pub trait ValueEventAggregate: Send + Sync + 'static {
    type Function: ValueEventFunction;

    const NAME: &'static str;

    /// Whether a group's result may be NULL.
    const NULLABLE: bool;

    fn return_type(arg_types: &[DataType]) -> Result<DataType>;

    fn function(args: &AccumulatorArgs) -> Result<Self::Function>;
}

/// The [`GroupsAggregate`] of a [`ValueEventAggregate`].
pub struct ValueEvents<A>(PhantomData<fn() -> A>);

/// The DataFusion aggregate of a [`ValueEventAggregate`].
pub type ValueEventUdaf<A> = Udaf<ValueEvents<A>>;

impl<A: ValueEventAggregate> GroupsAggregate for ValueEvents<A> {
    type Groups = ValueEventGroups<A::Function>;

    const NAME: &'static str = A::NAME;

    const NULLABLE: bool = A::NULLABLE;

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        A::return_type(arg_types)
    }

    fn state_fields(name: &str) -> Vec<FieldRef> {
        vec![
            list_state_field(name, "ts", DataType::Int64),
            list_state_field(name, "mask", DataType::UInt32),
            list_state_field(name, "value", DataType::Utf8),
        ]
    }

    fn groups(args: &AccumulatorArgs) -> Result<Self::Groups> {
        Ok(ValueEventGroups::new(A::function(args)?))
    }
}

/// The accumulator: each group's events, with values kept once per distinct string.
pub struct ValueEventGroups<F> {
    function: F,
    groups: GroupEvents<ValueEvent>,
    values: Vec<String>,
    value_ids: HashMap<String, u32>,
    value_bytes: usize,
}

impl<F: ValueEventFunction> ValueEventGroups<F> {
    fn new(function: F) -> Self {
        Self {
            function,
            groups: GroupEvents::default(),
            values: Vec::new(),
            value_ids: HashMap::new(),
            value_bytes: 0,
        }
    }

    fn value_id(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.value_ids.get(value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.to_string());
        self.value_ids.insert(value.to_string(), id);
        self.value_bytes += 2 * value.len();
        id
    }

    /// The events in (time, value, mask) order, a NULL value first.
    fn sort(&self, events: &mut [ValueEvent]) {
        let bytes = |id: u32| value_of(&self.values, id).map(str::as_bytes);
        events.sort_unstable_by(|a, b| {
            (a.ts, bytes(a.value), a.mask).cmp(&(b.ts, bytes(b.value), b.mask))
        });
    }

    /// The id of row `row`'s value.
    fn id_of(&mut self, values: &StringArray, row: usize) -> u32 {
        if values.is_null(row) {
            NULL_VALUE
        } else {
            self.value_id(values.value(row))
        }
    }
}

/// One input batch's arguments: times, condition masks and values, and the rows that are
/// events.
struct Rows {
    ts: Int64Array,
    masks: ScalarBuffer<u32>,
    values: StringArray,
    events: Vec<usize>,
}

impl Rows {
    fn decode(
        arguments: &[ArrayRef],
        at: &EventArguments,
        filter: Option<&BooleanArray>,
    ) -> Result<Self> {
        let ts = event_times(&arguments[at.ts])?;
        let masks = condition_masks(&arguments[at.conditions.clone()], ts.len(), None);
        let value = &arguments[at.value];
        let values = match value.data_type() {
            DataType::Utf8 => value.as_string::<i32>().clone(),
            _ => cast(value, &DataType::Utf8)?.as_string::<i32>().clone(),
        };
        let events = (0..ts.len())
            .filter(|&row| {
                ts.is_valid(row)
                    && (at.null_values || values.is_valid(row))
                    && !filtered_out(filter, row)
            })
            .collect();
        Ok(Self {
            ts,
            masks,
            values,
            events,
        })
    }
}

/// The state: per group, lists of event times, masks and values cut at `offsets`.
fn state_columns(
    offsets: OffsetBuffer<i32>,
    ts: Int64Array,
    masks: UInt32Array,
    values: StringArray,
) -> Result<Vec<ArrayRef>> {
    Ok(vec![
        list_column(offsets.clone(), Arc::new(ts), true)?,
        list_column(offsets.clone(), Arc::new(masks), true)?,
        list_column(offsets, Arc::new(values), true)?,
    ])
}

impl<F: ValueEventFunction> GroupsAccumulator for ValueEventGroups<F> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups);
        let rows = Rows::decode(values, self.function.arguments(), opt_filter)?;
        for &row in &rows.events {
            let event = ValueEvent {
                ts: rows.ts.value(row),
                mask: rows.masks[row],
                value: self.id_of(&rows.values, row),
            };
            self.groups.push(group_indices[row], event);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut groups = self.groups.take(emit_to);
        for events in groups.iter_mut() {
            self.sort(events);
        }
        self.function.evaluate(&groups, &self.values)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.groups.take(emit_to);
        let offsets = OffsetBuffer::<i32>::from_lengths(groups.iter().map(Vec::len));
        let events = || groups.iter().flatten();
        state_columns(
            offsets,
            events().map(|e| e.ts).collect(),
            events().map(|e| e.mask).collect(),
            events().map(|e| value_of(&self.values, e.value)).collect(),
        )
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups);
        let lists: Vec<_> = values.iter().map(|v| v.as_list::<i32>()).collect();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists[0].is_null(row) {
                continue;
            }
            let ts = lists[0].value(row);
            let masks = lists[1].value(row);
            let strings = lists[2].value(row);
            let (ts, masks, strings) = (
                ts.as_primitive::<Int64Type>(),
                masks.as_primitive::<UInt32Type>(),
                strings.as_string::<i32>(),
            );
            for i in 0..ts.len() {
                let value = self.id_of(strings, i);
                let event = ValueEvent {
                    ts: ts.value(i),
                    mask: masks.value(i),
                    value,
                };
                self.groups.push(group, event);
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = Rows::decode(values, self.function.arguments(), opt_filter)?;
        let mut lengths = vec![0; rows.ts.len()];
        for &row in &rows.events {
            lengths[row] = 1;
        }
        let events = || rows.events.iter().copied();
        state_columns(
            OffsetBuffer::from_lengths(lengths),
            events().map(|r| rows.ts.value(r)).collect(),
            events().map(|r| rows.masks[r]).collect(),
            events()
                .map(|r| rows.values.is_valid(r).then(|| rows.values.value(r)))
                .collect(),
        )
    }

    fn size(&self) -> usize {
        self.groups.size() + self.values.capacity() * size_of::<String>() + self.value_bytes
    }
}

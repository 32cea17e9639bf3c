//! `sequence_next_node`: what users do right after (or right before) a chain of events.
//! ClickHouse's `sequenceNextNode(direction, base)(ts, event_column, base_cond, event1, ...)`.
//!
//! ```sql
//! sequence_next_node(direction, base, ts, event_column, base_cond, event1, ..., eventN) -> Utf8
//! ```
//!
//! A group's events are its rows, ordered by `ts` and, at equal times, by `event_column`'s value
//! (bytewise, as ClickHouse orders them), then by the conditions they meet, so the answer never
//! depends on the order rows arrive in. One event is the *base*:
//!
//! - `'head'`: the first event, if it meets `base_cond` (direction `'forward'` only);
//! - `'tail'`: the last event, if it meets `base_cond` (direction `'backward'` only);
//! - `'first_match'` / `'last_match'`: the first / last event meeting both `base_cond` and
//!   `event1` (at least one event condition is then required).
//!
//! From the base the events must meet `event1`, `event2`, ... one after the other: going forward
//! (later events) or backward (earlier ones) as `direction` says, with no other event between
//! them. The result is `event_column` of the event after the chain in that direction; NULL when
//! there is no base, the chain breaks, or no event follows it. Without event conditions the
//! result is the base's own value.
//!
//! Rows with NULL `ts` or NULL `event_column` are not events (as in ClickHouse, which skips rows
//! with NULL arguments); NULL conditions are false. At most 31 event conditions.
//!
//! ```sql
//! -- Where do users go right after the pricing page?
//! SELECT next, count(*) FROM (
//!   SELECT user_id, sequence_next_node('forward', 'first_match', ts, page, true,
//!                                      page = 'pricing') AS next
//!   FROM page_views GROUP BY user_id)
//! GROUP BY next ORDER BY count(*) DESC;
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray, StringBuilder, UInt32Array,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Int64Type, UInt32Type};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::common::{
    SingleGroup, constant_string, filtered_out, is_string, list_column, list_state_field,
};
use crate::conditions::{check_boolean, check_conditions, condition_masks};
use crate::time::{check_event_time, event_times};

const NAME: &str = "sequence_next_node";
const USAGE: &str =
    "sequence_next_node(direction, base, ts, event_column, base_cond, event1, ..., eventN)";
const TS: usize = 2;
const VALUE: usize = 3;
const BASE_CONDITION: usize = 4;
/// Bit 0 of an event's mask is the base condition, bit i the event condition i.
const MAX_EVENTS: usize = 31;

pub fn functions() -> Vec<Arc<AggregateUDF>> {
    vec![Arc::new(AggregateUDF::from(SequenceNextNode::new()))]
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SequenceNextNode {
    signature: Signature,
}

impl SequenceNextNode {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl Default for SequenceNextNode {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Head,
    Tail,
    FirstMatch,
    LastMatch,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub direction: Direction,
    pub base: Base,
    /// Number of event conditions.
    pub events: usize,
}

fn check_types(types: &[DataType]) -> Result<usize> {
    if types.len() < 5 {
        return plan_err!("{NAME} takes at least 5 arguments: {USAGE}");
    }
    check_event_time(NAME, types, TS)?;
    if !is_string(&types[VALUE]) && types[VALUE] != DataType::Null {
        return plan_err!(
            "{NAME}: the event column (argument 4) must be a string, got {}",
            types[VALUE]
        );
    }
    check_boolean(NAME, "base condition", types, BASE_CONDITION)?;
    let events = &types[BASE_CONDITION + 1..];
    if events.len() > MAX_EVENTS {
        return plan_err!(
            "{NAME} takes at most {MAX_EVENTS} event conditions, got {}",
            events.len()
        );
    }
    check_conditions(NAME, events, None)
}

fn spec(args: &AccumulatorArgs) -> Result<Spec> {
    let types: Vec<DataType> = args
        .expr_fields
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let events = check_types(&types)?;
    let direction = match constant_string(NAME, args, 0, "direction")?.trim() {
        "forward" => Direction::Forward,
        "backward" => Direction::Backward,
        other => {
            return plan_err!(
                "{NAME}: unknown direction '{other}' (directions: forward, backward)"
            );
        }
    };
    let base = match constant_string(NAME, args, 1, "base")?.trim() {
        "head" => Base::Head,
        "tail" => Base::Tail,
        "first_match" => Base::FirstMatch,
        "last_match" => Base::LastMatch,
        other => {
            return plan_err!(
                "{NAME}: unknown base '{other}' (bases: head, tail, first_match, last_match)"
            );
        }
    };
    match (direction, base) {
        (Direction::Backward, Base::Head) => {
            return plan_err!(
                "{NAME}: base 'head' goes with direction 'forward' only (the first event has nothing before it)"
            );
        }
        (Direction::Forward, Base::Tail) => {
            return plan_err!(
                "{NAME}: base 'tail' goes with direction 'backward' only (the last event has nothing after it)"
            );
        }
        (_, Base::FirstMatch | Base::LastMatch) if events == 0 => {
            return plan_err!(
                "{NAME}: base 'first_match' and 'last_match' need at least one event condition, the one the base matches"
            );
        }
        _ => {}
    }
    Ok(Spec {
        direction,
        base,
        events,
    })
}

/// One event: its time, the conditions it meets and its value (an index into the
/// accumulator's distinct values).
#[derive(Debug, Clone, Copy)]
struct Event {
    ts: i64,
    mask: u32,
    value: u32,
}

/// Where the chain's next event is in `events` (sorted), if anywhere.
pub fn next_index(events: &[(i64, u32)], spec: Spec) -> Option<usize> {
    const BASE: u32 = 1;
    let step = |i: usize| 1u32 << (i + 1);
    let meets_base = |e: &(i64, u32)| e.1 & BASE != 0;
    let can_start = |e: &(i64, u32)| meets_base(e) && e.1 & step(0) != 0;
    let base = match spec.base {
        Base::Head => Some(0).filter(|_| events.first().is_some_and(meets_base)),
        Base::Tail => events
            .len()
            .checked_sub(1)
            .filter(|&i| meets_base(&events[i])),
        Base::FirstMatch => events.iter().position(can_start),
        Base::LastMatch => events.iter().rposition(can_start),
    }?;
    let at = |offset: usize| match spec.direction {
        Direction::Forward => base.checked_add(offset).filter(|&i| i < events.len()),
        Direction::Backward => base.checked_sub(offset),
    };
    for i in 0..spec.events {
        if events[at(i)?].1 & step(i) == 0 {
            return None;
        }
    }
    at(spec.events)
}

/// The accumulator: each group's events, with values kept once per distinct string.
struct NextNodeGroups {
    spec: Spec,
    groups: Vec<Vec<Event>>,
    values: Vec<String>,
    value_ids: HashMap<String, u32>,
    value_bytes: usize,
    event_capacity: usize,
}

impl NextNodeGroups {
    fn new(spec: Spec) -> Self {
        Self {
            spec,
            groups: Vec::new(),
            values: Vec::new(),
            value_ids: HashMap::new(),
            value_bytes: 0,
            event_capacity: 0,
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

    fn push(&mut self, group: usize, event: Event) {
        let events = &mut self.groups[group];
        let before = events.capacity();
        events.push(event);
        self.event_capacity += events.capacity() - before;
    }

    fn take_groups(&mut self, emit_to: EmitTo) -> Vec<Vec<Event>> {
        let groups = emit_to.take_needed(&mut self.groups);
        self.event_capacity -= groups.iter().map(Vec::capacity).sum::<usize>();
        groups
    }

    fn sort(&self, events: &mut [Event]) {
        events.sort_unstable_by(|a, b| {
            (a.ts, self.values[a.value as usize].as_bytes(), a.mask).cmp(&(
                b.ts,
                self.values[b.value as usize].as_bytes(),
                b.mask,
            ))
        });
    }
}

/// One input batch's arguments: times, condition masks and values, and the rows that are
/// events (a time and a value, and kept by the aggregate's filter).
struct Rows {
    ts: Int64Array,
    masks: ScalarBuffer<u32>,
    values: StringArray,
    events: Vec<usize>,
}

impl Rows {
    fn decode(arguments: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<Self> {
        let ts = event_times(&arguments[TS])?;
        let masks = condition_masks(&arguments[BASE_CONDITION..], ts.len(), None);
        let values = match arguments[VALUE].data_type() {
            DataType::Utf8 => arguments[VALUE].as_string::<i32>().clone(),
            _ => cast(&arguments[VALUE], &DataType::Utf8)?
                .as_string::<i32>()
                .clone(),
        };
        let events = (0..ts.len())
            .filter(|&row| ts.is_valid(row) && values.is_valid(row) && !filtered_out(filter, row))
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

impl GroupsAccumulator for NextNodeGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let rows = Rows::decode(values, opt_filter)?;
        for &row in &rows.events {
            let event = Event {
                ts: rows.ts.value(row),
                mask: rows.masks[row],
                value: self.value_id(rows.values.value(row)),
            };
            self.push(group_indices[row], event);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut groups = self.take_groups(emit_to);
        let mut out = StringBuilder::new();
        for events in groups.iter_mut() {
            self.sort(events);
            let keyed: Vec<(i64, u32)> = events.iter().map(|e| (e.ts, e.mask)).collect();
            match next_index(&keyed, self.spec) {
                Some(i) => out.append_value(&self.values[events[i].value as usize]),
                None => out.append_null(),
            }
        }
        Ok(Arc::new(out.finish()))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.take_groups(emit_to);
        let offsets = OffsetBuffer::<i32>::from_lengths(groups.iter().map(Vec::len));
        let events = || groups.iter().flatten();
        state_columns(
            offsets,
            events().map(|e| e.ts).collect(),
            events().map(|e| e.mask).collect(),
            events()
                .map(|e| Some(self.values[e.value as usize].as_str()))
                .collect(),
        )
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
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
                let value = self.value_id(strings.value(i));
                let event = Event {
                    ts: ts.value(i),
                    mask: masks.value(i),
                    value,
                };
                self.push(group, event);
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = Rows::decode(values, opt_filter)?;
        let mut lengths = vec![0; rows.ts.len()];
        for &row in &rows.events {
            lengths[row] = 1;
        }
        let events = || rows.events.iter().copied();
        state_columns(
            OffsetBuffer::from_lengths(lengths),
            events().map(|r| rows.ts.value(r)).collect(),
            events().map(|r| rows.masks[r]).collect(),
            events().map(|r| Some(rows.values.value(r))).collect(),
        )
    }

    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<Vec<Event>>()
            + self.event_capacity * size_of::<Event>()
            + self.values.capacity() * size_of::<String>()
            + self.value_bytes
    }
}

impl AggregateUDFImpl for SequenceNextNode {
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        check_types(arg_types)?;
        Ok(DataType::Utf8)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            list_state_field(args.name, "ts", DataType::Int64),
            list_state_field(args.name, "mask", DataType::UInt32),
            list_state_field(args.name, "value", DataType::Utf8),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleGroup::new(NextNodeGroups::new(spec(
            &args,
        )?))?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(NextNodeGroups::new(spec(&args)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u32 = 1;
    const E1: u32 = 2;
    const E2: u32 = 4;

    fn spec(direction: Direction, base: Base, events: usize) -> Spec {
        Spec {
            direction,
            base,
            events,
        }
    }

    #[test]
    fn forward_from_the_head() {
        let events = [(1, B | E1), (2, E2), (3, 0), (4, 0)];
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::Head, 2)),
            Some(2)
        );
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::Head, 0)),
            Some(0)
        );
        // The chain is adjacent events: E2 is not right after E1 here.
        let gap = [(1, B | E1), (2, 0), (3, E2), (4, 0)];
        assert_eq!(
            next_index(&gap, spec(Direction::Forward, Base::Head, 2)),
            None
        );
        // The head must meet the base condition; nothing after the chain is no answer.
        assert_eq!(
            next_index(&[(1, E1), (2, 0)], spec(Direction::Forward, Base::Head, 1)),
            None
        );
        assert_eq!(
            next_index(&[(1, B | E1)], spec(Direction::Forward, Base::Head, 1)),
            None
        );
    }

    #[test]
    fn matches_take_the_first_or_last_base_without_retrying() {
        // Bases at 0 and 2; from 0 the chain breaks, from 2 it holds.
        let events = [(1, B | E1), (2, 0), (3, B | E1), (4, E2), (5, 0)];
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::FirstMatch, 2)),
            None
        );
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::LastMatch, 2)),
            Some(4)
        );
        // An event meeting event1 but not the base condition is no base.
        let events = [(1, E1), (2, 0), (3, B | E1), (4, 0)];
        assert_eq!(
            next_index(&events, spec(Direction::Forward, Base::FirstMatch, 1)),
            Some(3)
        );
    }

    #[test]
    fn backward_from_the_tail_and_from_matches() {
        let events = [(1, 0), (2, E2), (3, B | E1)];
        assert_eq!(
            next_index(&events, spec(Direction::Backward, Base::Tail, 2)),
            Some(0)
        );
        assert_eq!(
            next_index(&events, spec(Direction::Backward, Base::LastMatch, 1)),
            Some(1)
        );
        // The first event has nothing before it.
        assert_eq!(
            next_index(
                &[(1, B | E1), (2, 0)],
                spec(Direction::Backward, Base::FirstMatch, 1)
            ),
            None
        );
        assert_eq!(
            next_index(&[], spec(Direction::Backward, Base::Tail, 0)),
            None
        );
    }
}

//! Per-group funnel state. A group's events are not copied as they arrive: the accumulator
//! keeps the arrays they arrived in (input columns, or the list columns of merged states) and,
//! per group, the runs of rows or list values that belong to it ([`Piece`]s in one shared
//! [`GroupLists`]). Input sorted by user puts each user's rows of a batch in one run, and a
//! merged state is one run, so recording costs a few words per run instead of a copy per event;
//! events are read out once, when the state or the level is produced.
//!
//! A row matching several conditions yields one event per condition; rows matching none yield
//! nothing, except a marker event in `strict_order` mode. Row ids, which keep one row from
//! counting twice in a chain, are carried only in `strict_once` mode.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt8Array, UInt32Array};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Int64Type, UInt8Type, UInt32Type};
use datafusion::error::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use super::level::{self, Event, Mode, Scratch};
use crate::common::{filtered_out, list_column};
use crate::conditions::condition_masks;
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
fn row_conditions(values: &[ArrayRef], args: &FunnelArgs, rows: usize) -> ScalarBuffer<u32> {
    condition_masks(&values[args.ts_index + 1..], rows, None)
}

/// Emits the events of one input row (matched conditions `mask`, id `row`). Conditions go from
/// last to first, as ClickHouse records them; the scan orders events by condition anyway.
#[inline]
fn row_events(mode: Mode, ts: i64, mask: u32, row: u32, mut out: impl FnMut(Event)) {
    if mask == 0 {
        if mode.strict_order {
            out(Event { ts, cond: 0, row });
        }
        return;
    }
    let mut rest = mask;
    while rest != 0 {
        let index = u32::BITS - 1 - rest.leading_zeros();
        rest &= !(1 << index);
        out(Event {
            ts,
            cond: index as u8 + 1,
            row,
        });
    }
}

/// State columns: one list per group of timestamps, condition indexes and row ids (the row
/// lists are empty unless the mode is `strict_once`).
pub fn state_fields(name: &str) -> Vec<Field> {
    let list = |item: DataType| DataType::List(Arc::new(Field::new_list_field(item, true)));
    vec![
        Field::new(format!("{name}[ts]"), list(DataType::Int64), true),
        Field::new(format!("{name}[cond]"), list(DataType::UInt8), true),
        Field::new(format!("{name}[row]"), list(DataType::UInt32), true),
    ]
}

/// Arrays a group's events are read from.
#[derive(Debug)]
enum Source {
    /// An input batch: event times and condition masks per row.
    Rows {
        ts: ScalarBuffer<i64>,
        masks: ScalarBuffer<u32>,
    },
    /// Merged states: the flattened list values.
    States {
        ts: ScalarBuffer<i64>,
        conds: ScalarBuffer<u8>,
        rows: Option<ScalarBuffer<u32>>,
    },
}

impl Source {
    fn size(&self) -> usize {
        match self {
            Source::Rows { ts, masks } => ts.len() * 8 + masks.inner().capacity(),
            Source::States { ts, conds, rows } => {
                ts.len() * 8 + conds.len() + rows.as_ref().map_or(0, |r| r.len() * 4)
            }
        }
    }
}

/// Rows (of a `Rows` source) or list values (of a `States` source) `start..start + len` of
/// `source`; `first_row` is the group's row id of the first of them.
#[derive(Debug, Clone, Copy)]
struct Piece {
    source: u32,
    start: u32,
    len: u32,
    first_row: u32,
}

/// Groups' pieces and the sources they point into.
#[derive(Debug, Default)]
struct Groups {
    pieces: GroupLists<Piece>,
    sources: Vec<Arc<Source>>,
    /// Rows and values the pieces cover: about the number of events, to size outputs.
    covered: usize,
}

impl Groups {
    /// The events of `group`, in arrival order.
    fn events(&self, group: usize, mode: Mode, mut out: impl FnMut(Event)) {
        for piece in self.pieces.iter(group) {
            let range = piece.start as usize..(piece.start + piece.len) as usize;
            match self.sources[piece.source as usize].as_ref() {
                Source::Rows { ts, masks } => {
                    for (offset, row) in range.enumerate() {
                        let id = piece.first_row.saturating_add(offset as u32);
                        row_events(mode, ts[row], masks[row], id, &mut out);
                    }
                }
                Source::States { ts, conds, rows } => {
                    for value in range {
                        let id = rows.as_ref().map_or(0, |r| r[value]);
                        out(Event {
                            ts: ts[value],
                            cond: conds[value],
                            row: piece.first_row.saturating_add(id),
                        });
                    }
                }
            }
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Result<Self> {
        let pieces = self.pieces.take(emit_to)?;
        let (sources, covered) = if self.pieces.groups() == 0 {
            (
                std::mem::take(&mut self.sources),
                std::mem::take(&mut self.covered),
            )
        } else {
            // Kept groups still point into the sources; what the taken part covers is unknown.
            (self.sources.clone(), 0)
        };
        Ok(Self {
            pieces,
            sources,
            covered,
        })
    }

    fn push(&mut self, group: usize, piece: Piece) -> Result<()> {
        self.covered += piece.len as usize;
        self.pieces.push(group, piece)
    }

    fn size(&self) -> usize {
        self.pieces.size() + self.sources.iter().map(|s| s.size()).sum::<usize>()
    }
}

/// Per-group event lists as the three state columns.
fn state_arrays(
    groups: usize,
    mode: Mode,
    expected_events: usize,
    mut events_of: impl FnMut(usize, &mut dyn FnMut(Event)),
) -> Result<Vec<ArrayRef>> {
    let mut lengths = Vec::with_capacity(groups);
    let mut ts = Vec::with_capacity(expected_events);
    let mut conds = Vec::with_capacity(expected_events);
    let mut rows = Vec::with_capacity(if mode.strict_once { expected_events } else { 0 });
    for group in 0..groups {
        let before = ts.len();
        events_of(group, &mut |event: Event| {
            ts.push(event.ts);
            conds.push(event.cond);
            if mode.strict_once {
                rows.push(event.row);
            }
        });
        lengths.push(ts.len() - before);
    }
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
    let row_offsets = if mode.strict_once {
        offsets.clone()
    } else {
        OffsetBuffer::new_zeroed(groups)
    };
    Ok(vec![
        list_column(offsets.clone(), Arc::new(Int64Array::from(ts)), true)?,
        list_column(offsets, Arc::new(UInt8Array::from(conds)), true)?,
        list_column(row_offsets, Arc::new(UInt32Array::from(rows)), true)?,
    ])
}

fn outputs(groups: &Groups, args: &FunnelArgs) -> Result<ArrayRef> {
    let mut events = Vec::new();
    let mut scratch = Scratch::default();
    let count = groups.pieces.groups();
    let mut levels = Vec::with_capacity(count);
    let mut lengths = Vec::new();
    let mut times = Vec::new();
    let mut chain_events = Vec::new();
    for group in 0..count {
        events.clear();
        groups.events(group, args.mode, |e| events.push(e));
        let chain = args.want_chain.then_some(&mut chain_events);
        let level = level::evaluate_into(
            &mut events,
            args.steps,
            args.window,
            args.mode,
            &mut scratch,
            chain,
        );
        if args.want_chain {
            lengths.push(level as usize);
            times.extend(chain_events.drain(..).map(|e| e.ts));
        } else {
            levels.push(level);
        }
    }
    if !args.want_chain {
        return Ok(Arc::new(UInt8Array::from(levels)));
    }
    let values = to_event_time_array(Int64Array::from(times), &args.ts_type)?;
    list_column(OffsetBuffer::from_lengths(lengths), values, true)
}

pub struct FunnelGroupsAccumulator {
    args: Arc<FunnelArgs>,
    groups: Groups,
    /// Per group, the id the next input row gets: rows stay distinct after merges (strict_once).
    next_row: Vec<u32>,
}

impl FunnelGroupsAccumulator {
    pub fn new(args: Arc<FunnelArgs>) -> Self {
        Self {
            args,
            groups: Groups::default(),
            next_row: Vec::new(),
        }
    }

    fn resize(&mut self, groups: usize) {
        self.groups.pieces.resize(groups);
        self.next_row.resize(groups, 0);
    }

    fn take(&mut self, emit_to: EmitTo) -> Result<Groups> {
        emit_to.take_needed(&mut self.next_row);
        self.groups.take(emit_to)
    }

    /// Records rows `start..end` of source `source` as one piece of `group`.
    fn push_run(&mut self, group: usize, source: u32, start: usize, end: usize) -> Result<()> {
        let first_row = self.next_row[group];
        let len = (end - start) as u32;
        self.next_row[group] = first_row.saturating_add(len);
        self.groups.push(
            group,
            Piece {
                source,
                start: start as u32,
                len,
                first_row,
            },
        )
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
        let source = self.groups.sources.len() as u32;
        // Rows matching nothing matter only to strict_order (they stop a chain) and strict_once
        // (they take a row id); otherwise they may extend a run but never start one.
        let ignorable = !self.args.mode.strict_order && !self.args.mode.strict_once;
        let mut run: Option<(usize, usize)> = None;
        for (row, &group) in group_indices.iter().enumerate() {
            if ts.is_null(row) || filtered_out(opt_filter, row) {
                if let Some((current, start)) = run.take() {
                    self.push_run(current, source, start, row)?;
                }
                continue;
            }
            match run {
                Some((current, _)) if current == group => {}
                _ => {
                    if let Some((current, start)) = run.take() {
                        self.push_run(current, source, start, row)?;
                    }
                    if !(ignorable && masks[row] == 0) {
                        run = Some((group, row));
                    }
                }
            }
        }
        if let Some((group, start)) = run {
            self.push_run(group, source, start, group_indices.len())?;
        }
        self.groups.sources.push(Arc::new(Source::Rows {
            ts: ts.values().clone(),
            masks,
        }));
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        outputs(&self.take(emit_to)?, &self.args)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.take(emit_to)?;
        let mode = self.args.mode;
        state_arrays(
            groups.pieces.groups(),
            mode,
            groups.covered,
            |group, out| groups.events(group, mode, out),
        )
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
        let strict_once = self.args.mode.strict_once;
        let ids = strict_once.then(|| rows.values().as_primitive::<UInt32Type>().values().clone());
        let offsets = ts.value_offsets();
        let source = self.groups.sources.len() as u32;
        for (index, &group) in group_indices.iter().enumerate() {
            let (start, end) = (offsets[index] as usize, offsets[index + 1] as usize);
            if ts.is_null(index) || start == end {
                continue;
            }
            // Row ids of the other state are shifted past ours so rows stay distinct.
            let shift = self.next_row[group];
            if let Some(ids) = &ids {
                let next = ids[start..end]
                    .iter()
                    .max()
                    .map_or(0, |m| m.saturating_add(1));
                self.next_row[group] = shift.saturating_add(next);
            }
            self.groups.push(
                group,
                Piece {
                    source,
                    start: start as u32,
                    len: (end - start) as u32,
                    first_row: shift,
                },
            )?;
        }
        self.groups.sources.push(Arc::new(Source::States {
            ts: ts.values().as_primitive::<Int64Type>().values().clone(),
            conds: cond.values().as_primitive::<UInt8Type>().values().clone(),
            rows: ids,
        }));
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let ts = event_times(&values[self.args.ts_index])?;
        let masks = row_conditions(values, &self.args, ts.len());
        let mode = self.args.mode;
        state_arrays(ts.len(), mode, ts.len(), |row, out| {
            if !ts.is_null(row) && !filtered_out(opt_filter, row) {
                row_events(mode, ts.value(row), masks[row], 0, out);
            }
        })
    }

    fn size(&self) -> usize {
        self.groups.size() + self.next_row.capacity() * size_of::<u32>()
    }
}

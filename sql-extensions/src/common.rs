//! Pieces every aggregate family here shares: constant-argument access, filter handling,
//! per-group event lists as list state, and the single-group `Accumulator` form of a
//! `GroupsAccumulator`.

use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, PrimitiveArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, FieldRef, Int64Type};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// The value of constant argument `index`; `what` names it in the error.
pub fn constant<'a>(
    function: &str,
    args: &'a AccumulatorArgs,
    index: usize,
    what: &str,
) -> Result<&'a ScalarValue> {
    match args.exprs[index].as_ref().downcast_ref::<Literal>() {
        Some(literal) => Ok(literal.value()),
        None => plan_err!("{function}: the {what} must be a constant"),
    }
}

/// A constant string argument.
pub fn constant_string<'a>(
    function: &str,
    args: &'a AccumulatorArgs,
    index: usize,
    what: &str,
) -> Result<&'a str> {
    match args.exprs[index]
        .as_ref()
        .downcast_ref::<Literal>()
        .map(Literal::value)
    {
        Some(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => Ok(s),
        _ => plan_err!("{function}: the {what} must be a constant string"),
    }
}

/// A constant integer argument from 1 to `max`, such as a number of periods.
pub fn constant_count(
    function: &str,
    args: &AccumulatorArgs,
    index: usize,
    what: &str,
    max: i64,
) -> Result<usize> {
    match constant(function, args, index, what)?.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) if (1..=max).contains(&n) => Ok(n as usize),
        _ => {
            let given = constant(function, args, index, what)?;
            plan_err!("{function}: the {what} must be from 1 to {max}, got {given}")
        }
    }
}

/// The types of a call's arguments, as the planner resolved them.
pub fn argument_types(args: &AccumulatorArgs) -> Vec<DataType> {
    args.expr_fields
        .iter()
        .map(|f| f.data_type().clone())
        .collect()
}

pub fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    )
}

/// Whether an aggregate `FILTER (WHERE ...)` excludes `row`.
pub fn filtered_out(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_some_and(|f| !f.is_valid(row) || !f.value(row))
}

/// A state field `name[part]` holding one list of `item_type` per group.
pub fn list_state_field(name: &str, part: &str, item_type: DataType) -> FieldRef {
    let list = DataType::List(Arc::new(Field::new_list_field(item_type, true)));
    Arc::new(Field::new(format!("{name}[{part}]"), list, true))
}

/// State fields of per-group event lists: event times and a small per-event value.
pub fn event_list_fields(name: &str, value_name: &str, value_type: DataType) -> Vec<FieldRef> {
    vec![
        list_state_field(name, "ts", DataType::Int64),
        list_state_field(name, value_name, value_type),
    ]
}

/// A list column: `values` cut at `offsets`, no NULL lists; items nullable or not as the
/// function's declared type says.
pub fn list_column(
    offsets: OffsetBuffer<i32>,
    values: ArrayRef,
    nullable_items: bool,
) -> Result<ArrayRef> {
    let field = Arc::new(Field::new_list_field(
        values.data_type().clone(),
        nullable_items,
    ));
    Ok(Arc::new(ListArray::try_new(field, offsets, values, None)?))
}

/// Encodes per-group `(time, value)` lists as the two list columns of [`event_list_fields`].
pub fn event_list_state<K: ArrowPrimitiveType>(
    groups: &[Vec<(i64, K::Native)>],
) -> Result<Vec<ArrayRef>> {
    let offsets = OffsetBuffer::<i32>::from_lengths(groups.iter().map(Vec::len));
    let times = Int64Array::from_iter_values(groups.iter().flatten().map(|e| e.0));
    let values = PrimitiveArray::<K>::from_iter_values(groups.iter().flatten().map(|e| e.1));
    Ok(vec![
        list_column(offsets.clone(), Arc::new(times), true)?,
        list_column(offsets, Arc::new(values), true)?,
    ])
}

/// Appends the event lists of state row `row` to `group`.
pub fn append_event_list<K: ArrowPrimitiveType>(
    state: &[ArrayRef],
    row: usize,
    group: &mut Vec<(i64, K::Native)>,
) {
    let (times, values) = (state[0].as_list::<i32>(), state[1].as_list::<i32>());
    if times.is_null(row) {
        return;
    }
    let (times, values) = (times.value(row), values.value(row));
    group.extend(
        times
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .copied()
            .zip(values.as_primitive::<K>().values().iter().copied()),
    );
}

/// Each group's events. The capacity of all of them is kept up to date as they grow and are
/// emitted: DataFusion asks for `size()` after every batch, too often to sum over every group.
#[derive(Debug)]
pub struct GroupEvents<T> {
    groups: Vec<Vec<T>>,
    capacity: usize,
}

impl<T> Default for GroupEvents<T> {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            capacity: 0,
        }
    }
}

impl<T> GroupEvents<T> {
    pub fn resize(&mut self, groups: usize) {
        self.groups.resize_with(groups, Vec::new);
    }

    pub fn push(&mut self, group: usize, event: T) {
        self.extend_group(group, |events| events.push(event));
    }

    /// Lets `add` append to `group`'s events.
    pub fn extend_group(&mut self, group: usize, add: impl FnOnce(&mut Vec<T>)) {
        let events = &mut self.groups[group];
        let before = events.capacity();
        add(events);
        self.capacity += events.capacity() - before;
    }

    /// Takes the groups `emit_to` asks for, releasing their capacity from the total.
    pub fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<T>> {
        let groups = emit_to.take_needed(&mut self.groups);
        self.capacity -= groups.iter().map(Vec::capacity).sum::<usize>();
        groups
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.groups.capacity() * size_of::<Vec<T>>() + self.capacity * size_of::<T>()
    }
}

/// A `GroupsAccumulator` used as the plain `Accumulator` of one group, so each function's
/// logic exists once. `state` re-merges what it emits, so the group survives it.
pub struct SingleGroup<G: GroupsAccumulator> {
    inner: G,
}

impl<G: GroupsAccumulator> SingleGroup<G> {
    pub fn new(mut inner: G) -> Result<Self> {
        // An empty state merged into group 0 creates the group, so an accumulator that never
        // sees a row still evaluates to the function's empty result.
        let empty = inner.state(EmitTo::All)?;
        inner.merge_batch(&empty, &[], 1)?;
        Ok(Self { inner })
    }
}

impl<G: GroupsAccumulator> std::fmt::Debug for SingleGroup<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleGroup")
            .field("size", &self.inner.size())
            .finish()
    }
}

impl<G: GroupsAccumulator + Sync> Accumulator for SingleGroup<G> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        self.inner.update_batch(values, &vec![0; rows], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        ScalarValue::try_from_array(&self.inner.evaluate(EmitTo::All)?, 0)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let arrays = self.inner.state(EmitTo::All)?;
        self.inner.merge_batch(&arrays, &[0], 1)?;
        arrays
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states.first().map_or(0, |v| v.len());
        self.inner.merge_batch(states, &vec![0; rows], 1)
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.inner.size()
    }
}

/// A function over each group's event list: which value a row records (the type's default,
/// i.e. zero, records nothing) and what a group's list evaluates to.
pub trait EventListFunction: Send + Sync + 'static {
    type Value: ArrowPrimitiveType;

    /// Index of the event-time argument.
    fn ts_index(&self) -> usize;

    /// The value each input row records.
    fn row_values(&self, values: &[ArrayRef]) -> Vec<<Self::Value as ArrowPrimitiveType>::Native>;

    /// One output value per group.
    fn evaluate(&self, groups: &mut [Vec<EventOf<Self>>]) -> Result<ArrayRef>;
}

/// One recorded event: time and the function's value for its row.
pub type EventOf<F> = (
    i64,
    <<F as EventListFunction>::Value as ArrowPrimitiveType>::Native,
);

/// The `GroupsAccumulator` of every [`EventListFunction`]: events per group as list state.
pub struct EventListGroups<F: EventListFunction> {
    function: F,
    groups: GroupEvents<EventOf<F>>,
}

impl<F: EventListFunction> EventListGroups<F> {
    pub fn new(function: F) -> Self {
        Self {
            function,
            groups: GroupEvents::default(),
        }
    }

    /// The events of each input row (empty for rows that record nothing).
    fn row_events(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<Option<EventOf<F>>>> {
        let ts = crate::time::event_times(&values[self.function.ts_index()])?;
        let recorded = self.function.row_values(values);
        let none = <<F::Value as ArrowPrimitiveType>::Native as Default>::default();
        Ok(recorded
            .into_iter()
            .enumerate()
            .map(|(row, value)| {
                (value != none && ts.is_valid(row) && !filtered_out(opt_filter, row))
                    .then(|| (ts.value(row), value))
            })
            .collect())
    }
}

impl<F: EventListFunction> GroupsAccumulator for EventListGroups<F> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups);
        for (event, &group) in self
            .row_events(values, opt_filter)?
            .into_iter()
            .zip(group_indices)
        {
            if let Some(event) = event {
                self.groups.push(group, event);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut groups = self.groups.take(emit_to);
        self.function.evaluate(&mut groups)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        event_list_state::<F::Value>(&self.groups.take(emit_to))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups);
        for (row, &group) in group_indices.iter().enumerate() {
            self.groups.extend_group(group, |events| {
                append_event_list::<F::Value>(values, row, events)
            });
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let groups: Vec<Vec<EventOf<F>>> = self
            .row_events(values, opt_filter)?
            .into_iter()
            .map(|event| event.into_iter().collect())
            .collect();
        event_list_state::<F::Value>(&groups)
    }

    fn size(&self) -> usize {
        self.groups.size()
    }
}

/// What an aggregate over event lists adds to its [`EventListFunction`]: its name, result type,
/// the name of the per-event value in its state, and how a call's arguments make the function.
/// [`EventListUdaf`] turns it into a DataFusion aggregate.
pub trait EventListAggregate: Send + Sync + 'static {
    type Function: EventListFunction;

    const NAME: &'static str;
    const VALUE_NAME: &'static str;

    /// The result type for these argument types, or the planning error naming the bad one.
    fn return_type(arg_types: &[DataType]) -> Result<DataType>;

    /// The function of one call, from its constant arguments.
    fn function(args: &AccumulatorArgs) -> Result<Self::Function>;
}

/// An aggregate computed by a `GroupsAccumulator`: its name, result type, state and
/// accumulator. [`Udaf`] turns it into a DataFusion aggregate.
pub trait GroupsAggregate: Send + Sync + 'static {
    type Groups: GroupsAccumulator + Sync + 'static;

    const NAME: &'static str;

    /// Whether a group's result may be NULL.
    const NULLABLE: bool = false;

    /// The result type for these argument types, or the planning error naming the bad one.
    fn return_type(arg_types: &[DataType]) -> Result<DataType>;

    /// The state fields of the aggregate called `name`.
    fn state_fields(name: &str) -> Vec<FieldRef>;

    /// The accumulator of one call, from its constant arguments.
    fn groups(args: &AccumulatorArgs) -> Result<Self::Groups>;
}

/// The DataFusion aggregate of a [`GroupsAggregate`]: any arguments (the aggregate checks
/// them), documented from the catalog, and the same accumulator for one group as for
/// many.
pub struct Udaf<A> {
    signature: Signature,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: GroupsAggregate> Udaf<A> {
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
            aggregate: PhantomData,
        }
    }
}

impl<A: GroupsAggregate> Default for Udaf<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> std::fmt::Debug for Udaf<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udaf")
            .field("aggregate", &std::any::type_name::<A>())
            .finish()
    }
}

impl<A> PartialEq for Udaf<A> {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}

impl<A> Eq for Udaf<A> {}

impl<A> Hash for Udaf<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.signature.hash(state);
    }
}

impl<A: GroupsAggregate> AggregateUDFImpl for Udaf<A> {
    fn name(&self) -> &str {
        A::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        A::return_type(arg_types)
    }

    fn is_nullable(&self) -> bool {
        A::NULLABLE
    }

    fn documentation(&self) -> Option<&Documentation> {
        crate::catalog::documentation(A::NAME)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(A::state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleGroup::new(A::groups(&args)?)?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(A::groups(&args)?))
    }
}

/// The [`GroupsAggregate`] of an [`EventListAggregate`].
pub struct EventLists<A>(PhantomData<fn() -> A>);

impl<A: EventListAggregate> GroupsAggregate for EventLists<A> {
    type Groups = EventListGroups<A::Function>;

    const NAME: &'static str = A::NAME;

    fn return_type(arg_types: &[DataType]) -> Result<DataType> {
        A::return_type(arg_types)
    }

    fn state_fields(name: &str) -> Vec<FieldRef> {
        let value_type =
            <<A::Function as EventListFunction>::Value as ArrowPrimitiveType>::DATA_TYPE;
        event_list_fields(name, A::VALUE_NAME, value_type)
    }

    fn groups(args: &AccumulatorArgs) -> Result<Self::Groups> {
        Ok(EventListGroups::new(A::function(args)?))
    }
}

/// The DataFusion aggregate of an [`EventListAggregate`].
pub type EventListUdaf<A> = Udaf<EventLists<A>>;

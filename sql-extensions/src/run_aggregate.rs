//! Partial aggregation that looks a group key up once per run of equal keys.
//!
//! Behaviour data is written and read in `(user_id, ts)` order, so a scan delivers each user's
//! events one after another. DataFusion's partial hash aggregation still hashes and probes every
//! row; for a per-user funnel or retention over 10 M events that probe is the largest single
//! cost (a third of the retention query). [`RunAggregateExec`] replaces a partial
//! `AggregateExec` grouped by one integer column: a row whose key equals the previous row's
//! reuses its group, so the hash table is probed once per run, not once per row. Any input
//! order stays correct; ordered input is merely cheaper.
//!
//! A partial aggregate may emit the same group several times (the final aggregate merges
//! states anyway), which this operator uses twice: while keys arrive in ascending order it emits
//! its groups every `batch_size` groups, so sorted input is aggregated in constant memory, and
//! when the memory pool refuses to grow it emits everything instead of failing.
//!
//! [`RunAggregateRule`], added by [`crate::with_extensions`], makes the replacement, and
//! replaces the final aggregation over it with [`RunFinalExec`].

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Int8Type, Int16Type, Int32Type, Int64Type, SchemaRef, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::internal_datafusion_err;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
};
use futures::StreamExt;

use crate::run_final::RunFinalExec;

/// Replaces every partial `AggregateExec` that [`RunAggregateExec`] can run, and the final
/// aggregation of its states that [`RunFinalExec`] can run.
#[derive(Debug, Default)]
pub struct RunAggregateRule;

impl PhysicalOptimizerRule for RunAggregateRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(run_final) = RunFinalExec::replacing(&node) {
                return Ok(Transformed::yes(Arc::new(run_final) as _));
            }
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !RunAggregateExec::supports(aggregate) {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                Arc::new(RunAggregateExec::new(aggregate.clone())) as _,
            ))
        })
        .data()
    }

    fn name(&self) -> &str {
        "run_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial aggregation grouped by one integer column; see the module documentation.
#[derive(Debug, Clone)]
pub struct RunAggregateExec {
    /// The aggregate this replaces: its expressions, schema and input.
    aggregate: AggregateExec,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    /// Whether `aggregate` is a partial aggregation this operator computes identically: one
    /// plain integer group key, accumulators that work on group indices, no argument ordering,
    /// no DISTINCT, no limit, and no ordering promised downstream.
    pub fn supports(aggregate: &AggregateExec) -> bool {
        plain_single_key(aggregate, AggregateMode::Partial)
            && aggregate.group_expr().expr()[0]
                .0
                .data_type(&aggregate.input_schema())
                .is_ok_and(|t| run_groups(&t).is_some())
            && aggregate
                .aggr_expr()
                .iter()
                .all(|a| a.order_bys().is_empty() && !a.is_distinct())
    }

    pub fn new(aggregate: AggregateExec) -> Self {
        let source = aggregate.properties();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(aggregate.schema()),
            source.output_partitioning().clone(),
            EmissionType::Both,
            Boundedness::Bounded,
        );
        Self {
            aggregate,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        fmt_aggregation(&self.aggregate, "RunAggregateExec: mode=Partial", t, f)
    }
}

/// What both run operators need of the aggregation they replace: `mode`, one group key and
/// no grouping sets, accumulators that work on group indices, no limit, no dynamic filters,
/// and no ordering promised downstream.
pub(crate) fn plain_single_key(aggregate: &AggregateExec, mode: AggregateMode) -> bool {
    let group_by = aggregate.group_expr();
    *aggregate.mode() == mode
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && !group_by.has_grouping_set()
        && group_by.expr().len() == 1
        && aggregate
            .aggr_expr()
            .iter()
            .all(|a| a.groups_accumulator_supported())
}

/// How the run operators show in `EXPLAIN`: `label`, the group key and the aggregates of the
/// aggregation they compute.
pub(crate) fn fmt_aggregation(
    aggregate: &AggregateExec,
    label: &str,
    t: DisplayFormatType,
    f: &mut fmt::Formatter,
) -> fmt::Result {
    let aggregates: Vec<&str> = aggregate.aggr_expr().iter().map(|a| a.name()).collect();
    let key = &aggregate.group_expr().expr()[0];
    match t {
        DisplayFormatType::TreeRender => {
            writeln!(f, "gby={}", key.1)?;
            write!(f, "aggr={}", aggregates.join(", "))
        }
        _ => write!(
            f,
            "{label}, gby=[{} as {}], aggr=[{}]",
            key.0,
            key.1,
            aggregates.join(", ")
        ),
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        #[expect(
            deprecated,
            reason = "the delegate still implements the old entry point"
        )]
        let aggregate = Arc::new(self.aggregate.clone()).with_new_children(children)?;
        match aggregate.downcast_ref::<AggregateExec>() {
            Some(aggregate) if Self::supports(aggregate) => {
                // The same metrics: a copy made to run the plan again (RunFinalExec's fallback)
                // reports its work where EXPLAIN ANALYZE looks.
                let mut copy = Self::new(aggregate.clone());
                copy.metrics = self.metrics.clone();
                Ok(Arc::new(copy))
            }
            // The new input changed what the aggregate is (e.g. now ordered): keep DataFusion's.
            _ => Ok(aggregate),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self
            .aggregate
            .input()
            .execute(partition, Arc::clone(&context))?;
        let state = RunAggregation::new(&self.aggregate, partition, &context, &self.metrics)?;
        let schema = self.aggregate.schema();
        let stream = futures::stream::unfold((input, state), |(mut input, mut state)| async move {
            loop {
                if let Some(batch) = state.ready.pop_front() {
                    state.metrics.record_output(batch.num_rows());
                    return Some((Ok(batch), (input, state)));
                }
                if state.finished {
                    state.metrics.done();
                    return None;
                }
                let step = match input.next().await {
                    Some(Ok(batch)) => state.aggregate_batch(&batch),
                    Some(Err(error)) => Err(error),
                    None => {
                        state.finished = true;
                        state.emit()
                    }
                };
                if let Err(error) = step {
                    state.finished = true;
                    state.ready.clear();
                    return Some((Err(error), (input, state)));
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's aggregation in progress.
struct RunAggregation {
    schema: SchemaRef,
    key: Arc<dyn PhysicalExpr>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    groups: Box<dyn RunGroups>,
    group_indices: Vec<usize>,
    batch_size: usize,
    reservation: MemoryReservation,
    metrics: BaselineMetrics,
    ready: VecDeque<RecordBatch>,
    finished: bool,
}

impl RunAggregation {
    fn new(
        aggregate: &AggregateExec,
        partition: usize,
        context: &TaskContext,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Self> {
        let key = Arc::clone(&aggregate.group_expr().expr()[0].0);
        let key_type = key.data_type(&aggregate.input_schema())?;
        let accumulators = aggregate
            .aggr_expr()
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<_>>()?;
        let reservation = MemoryConsumer::new(format!("RunAggregateExec[{partition}]"))
            .with_can_spill(true)
            .register(context.memory_pool());
        Ok(Self {
            schema: aggregate.schema(),
            key,
            arguments: aggregate
                .aggr_expr()
                .iter()
                .map(|a| a.expressions())
                .collect(),
            filters: aggregate.filter_expr().to_vec(),
            accumulators,
            groups: run_groups(&key_type).ok_or_else(|| {
                internal_datafusion_err!("RunAggregateExec planned for a {key_type} key")
            })?,
            group_indices: Vec::new(),
            batch_size: context.session_config().batch_size(),
            reservation,
            metrics: BaselineMetrics::new(metrics, partition),
            ready: VecDeque::new(),
            finished: false,
        })
    }

    fn aggregate_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let timer = self.metrics.elapsed_compute().clone();
        let _timer = timer.timer();
        let rows = batch.num_rows();
        let keys = self.key.evaluate(batch)?.into_array(rows)?;
        self.group_indices.clear();
        self.groups.intern(&keys, &mut self.group_indices);
        let total_groups = self.groups.len();
        for ((accumulator, arguments), filter) in self
            .accumulators
            .iter_mut()
            .zip(&self.arguments)
            .zip(&self.filters)
        {
            let values = arguments
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(rows))
                .collect::<Result<Vec<_>>>()?;
            let filter = match filter {
                Some(filter) => Some(filter.evaluate(batch)?.into_array(rows)?),
                None => None,
            };
            let filter = filter.as_ref().map(|f| f.as_boolean());
            accumulator.update_batch(&values, &self.group_indices, filter, total_groups)?;
        }
        if self.groups.ascending() && total_groups >= self.batch_size {
            // Keys arrive in order: these groups are (almost surely) complete, pass them on.
            return self.emit();
        }
        if self.reservation.try_resize(self.size()).is_err() {
            // Out of memory: hand the groups to the final aggregation rather than failing.
            self.emit()?;
            self.reservation.try_resize(self.size())?;
        }
        Ok(())
    }

    /// Passes every group on as output and starts afresh.
    fn emit(&mut self) -> Result<()> {
        if self.groups.len() == 0 {
            return Ok(());
        }
        let mut columns = vec![self.groups.take()];
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        for start in (0..batch.num_rows()).step_by(self.batch_size.max(1)) {
            let len = self.batch_size.min(batch.num_rows() - start);
            self.ready.push_back(batch.slice(start, len));
        }
        self.reservation
            .shrink(self.reservation.size().saturating_sub(self.size()));
        Ok(())
    }

    fn size(&self) -> usize {
        self.groups.size()
            + self.group_indices.capacity() * size_of::<usize>()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }
}

/// Group numbering for keys of `data_type`; `None` for key types this operator does not take.
pub(crate) fn run_groups(data_type: &DataType) -> Option<Box<dyn RunGroups>> {
    Some(match data_type {
        DataType::Int8 => Box::new(PrimitiveRunGroups::<Int8Type>::default()),
        DataType::Int16 => Box::new(PrimitiveRunGroups::<Int16Type>::default()),
        DataType::Int32 => Box::new(PrimitiveRunGroups::<Int32Type>::default()),
        DataType::Int64 => Box::new(PrimitiveRunGroups::<Int64Type>::default()),
        DataType::UInt8 => Box::new(PrimitiveRunGroups::<UInt8Type>::default()),
        DataType::UInt16 => Box::new(PrimitiveRunGroups::<UInt16Type>::default()),
        DataType::UInt32 => Box::new(PrimitiveRunGroups::<UInt32Type>::default()),
        DataType::UInt64 => Box::new(PrimitiveRunGroups::<UInt64Type>::default()),
        _ => return None,
    })
}

/// Group numbering of the keys seen since the last emission.
pub(crate) trait RunGroups: Send {
    /// Appends the group index of each row of `keys` to `groups`.
    fn intern(&mut self, keys: &ArrayRef, groups: &mut Vec<usize>);
    /// Groups numbered so far.
    fn len(&self) -> usize;
    /// Whether every run so far started with a larger key than the run before it.
    fn ascending(&self) -> bool;
    /// The keys of all groups, in group order; numbering restarts at 0.
    fn take(&mut self) -> ArrayRef;
    fn size(&self) -> usize;
}

struct PrimitiveRunGroups<T: ArrowPrimitiveType> {
    /// Key -> group, built only once keys stop ascending.
    index: hashbrown::HashMap<T::Native, usize>,
    /// Key of each group; the NULL group's slot holds a default value.
    keys: Vec<T::Native>,
    null_group: Option<usize>,
    /// The previous row's key, kept across emissions for the order check.
    previous: Option<T::Native>,
    /// The previous row's group, if it has not been emitted since.
    previous_group: Option<usize>,
    ascending: bool,
}

impl<T: ArrowPrimitiveType> Default for PrimitiveRunGroups<T> {
    fn default() -> Self {
        Self {
            index: hashbrown::HashMap::default(),
            keys: Vec::new(),
            null_group: None,
            previous: None,
            previous_group: None,
            ascending: true,
        }
    }
}

impl<T> PrimitiveRunGroups<T>
where
    T: ArrowPrimitiveType,
    T::Native: Hash + Eq + Ord,
{
    /// The group of a non-NULL key: the previous row's group when the key repeats, a new group
    /// while keys ascend, else a lookup.
    fn group_of(&mut self, key: T::Native) -> usize {
        if let (Some(previous), Some(group)) = (self.previous, self.previous_group)
            && previous == key
        {
            return group;
        }
        // While keys ascend every run starts a group never seen, so no index is kept: hashing
        // each key cost more than the rest of the interning. An equal key here belongs to a
        // group already handed on, so it starts a new one too.
        let group = if self.ascending && self.previous.is_none_or(|previous| key >= previous) {
            self.keys.push(key);
            self.keys.len() - 1
        } else {
            if self.ascending {
                self.ascending = false;
                self.index_groups_so_far();
            }
            let keys = &mut self.keys;
            *self.index.entry(key).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            })
        };
        self.previous = Some(key);
        self.previous_group = Some(group);
        group
    }

    /// Indexes the groups numbered while keys ascended (all distinct), leaving out the NULL group.
    fn index_groups_so_far(&mut self) {
        self.index.reserve(self.keys.len());
        for (group, &key) in self.keys.iter().enumerate() {
            if Some(group) != self.null_group {
                self.index.insert(key, group);
            }
        }
    }

    fn null(&mut self) -> usize {
        *self.null_group.get_or_insert_with(|| {
            self.keys.push(T::Native::default());
            self.keys.len() - 1
        })
    }
}

impl<T> RunGroups for PrimitiveRunGroups<T>
where
    T: ArrowPrimitiveType,
    T::Native: Hash + Eq + Ord,
{
    fn intern(&mut self, keys: &ArrayRef, groups: &mut Vec<usize>) {
        let keys = keys.as_primitive::<T>();
        groups.reserve(keys.len());
        if keys.null_count() > 0 {
            for (row, &key) in keys.values().iter().enumerate() {
                let group = if keys.is_null(row) {
                    self.null()
                } else {
                    self.group_of(key)
                };
                groups.push(group);
            }
            return;
        }
        // No NULLs: find each run's end and fill its group indices in one go.
        let values = keys.values();
        let mut start = 0;
        while start < values.len() {
            let key = values[start];
            let group = self.group_of(key);
            let len = values[start..].iter().take_while(|&&k| k == key).count();
            groups.extend(std::iter::repeat_n(group, len));
            start += len;
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn ascending(&self) -> bool {
        self.ascending
    }

    fn take(&mut self) -> ArrayRef {
        let nulls = self
            .null_group
            .take()
            .map(|null| NullBuffer::from_iter((0..self.keys.len()).map(|group| group != null)));
        self.index.clear();
        self.previous_group = None;
        let keys = std::mem::take(&mut self.keys);
        Arc::new(PrimitiveArray::<T>::new(keys.into(), nulls))
    }

    fn size(&self) -> usize {
        self.index.capacity() * (size_of::<T::Native>() + size_of::<usize>() + 1)
            + self.keys.capacity() * size_of::<T::Native>()
    }
}

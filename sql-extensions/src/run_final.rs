//! Final aggregation of [`RunAggregateExec`]'s partial states, numbered by runs instead of a
//! hash table.
//!
//! DataFusion finishes a partial aggregation by hash-repartitioning the states and merging
//! them in a hash table per output partition: for a per-user funnel or retention over 10 M
//! events that is a probe for each of 500 k users into a table of all of them, about a
//! quarter of the query. Yet when events are stored by user, each partial partition's states
//! come out in ascending key order, and the partitions cover consecutive key ranges (a scan
//! splits files into consecutive pieces). [`RunFinalExec`] replaces
//! `AggregateExec(FinalPartitioned) <- RepartitionExec(Hash(key)) <- RunAggregateExec`:
//!
//! 1. one task per partial partition collects its states, sending each row to the output
//!    partition the hash repartitioning would (so the output keeps its declared partitioning);
//! 2. once all are in, each output partition merges its rows taking the partial partitions in
//!    order of their first key, so keys ascend and a group is a run of equal keys, as in
//!    [`RunAggregateExec`]. Keys in any other order are merged correctly all the same: the
//!    group numbering builds a key index when the order first breaks.
//!
//! Like the hash aggregation it replaces, it produces nothing before all states are in. Unlike
//! it, it cannot spill: the states are accounted in the memory pool as they arrive, and when
//! the pool refuses them, they are dropped and the original operators (which spill) run from
//! the partial aggregation again. Only a query whose states outgrow the pool pays for the
//! second pass.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use datafusion::common::hash_utils::create_hashes;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, ScalarValue, internal_datafusion_err};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::{REPARTITION_RANDOM_STATE, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use crate::run_aggregate::{RunAggregateExec, fmt_aggregation, plain_single_key, run_groups};

/// The final aggregation of run-aggregated partial states; see the module documentation.
#[derive(Debug)]
pub struct RunFinalExec {
    /// The operators this replaces, run when the states do not fit the memory pool:
    /// `AggregateExec(FinalPartitioned) <- RepartitionExec <- RunAggregateExec`.
    aggregate: Arc<AggregateExec>,
    /// The partial states.
    input: Arc<dyn ExecutionPlan>,
    /// Hash expressions of the repartitioning and the number of output partitions.
    hash: Vec<Arc<dyn PhysicalExpr>>,
    outputs: usize,
    metrics: ExecutionPlanMetricsSet,
    /// The collection the output partitions of one execution share, and how many of them
    /// have been handed it.
    execution: Mutex<Option<(Arc<Execution>, usize)>>,
}

impl RunFinalExec {
    /// The replacement of `node`, if it is a final aggregation this operator computes
    /// identically: one group key, hash-repartitioned on that key alone, over run-aggregated
    /// partial states, with no limit and no ordering promised.
    pub fn replacing(node: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let aggregate = node.downcast_ref::<AggregateExec>()?;
        let repartition = aggregate.input().downcast_ref::<RepartitionExec>()?;
        let input = repartition.input();
        input.downcast_ref::<RunAggregateExec>()?;
        let Partitioning::Hash(hash, outputs) = repartition.partitioning() else {
            return None;
        };
        let key_is_column_0 =
            |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().is_some_and(|c| c.index() == 0);
        let suitable = plain_single_key(aggregate, AggregateMode::FinalPartitioned)
            && key_is_column_0(&aggregate.group_expr().expr()[0].0)
            && hash.len() == 1
            && key_is_column_0(&hash[0])
            && !repartition.preserve_order();
        suitable.then(|| Self {
            aggregate: Arc::new(aggregate.clone()),
            input: Arc::clone(input),
            hash: hash.clone(),
            outputs: *outputs,
            metrics: ExecutionPlanMetricsSet::new(),
            execution: Mutex::new(None),
        })
    }

    /// The collection of this execution's partial states; the first output partition to ask
    /// creates it, and it is forgotten once every output partition has taken its share, so a
    /// plan executed again collects again.
    fn execution(&self) -> Arc<Execution> {
        let mut current = self.execution.lock().expect("collection lock");
        let (execution, handed_out) = current.get_or_insert_with(Default::default);
        let execution = Arc::clone(execution);
        *handed_out += 1;
        if *handed_out == self.outputs {
            *current = None;
        }
        execution
    }
}

impl DisplayAs for RunFinalExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let label = format!("RunFinalExec: partitions={}", self.outputs);
        fmt_aggregation(&self.aggregate, &label, t, f)
    }
}

impl ExecutionPlan for RunFinalExec {
    fn name(&self) -> &str {
        "RunFinalExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
            reason = "the delegates still implement the old entry point"
        )]
        let aggregate = {
            let repartition = Arc::clone(self.aggregate.input()).with_new_children(children)?;
            Arc::clone(&self.aggregate).with_new_children(vec![repartition])?
        };
        match Self::replacing(&aggregate) {
            Some(replacement) => Ok(Arc::new(replacement)),
            // The new input changed what the aggregation is: keep DataFusion's operators.
            None => Ok(aggregate),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let execution = self.execution();
        let sources = Sources {
            input: Arc::clone(&self.input),
            hash: self.hash.clone(),
            outputs: self.outputs,
            context: Arc::clone(&context),
        };
        let mut merge = Merge::new(&self.aggregate, partition, &context, &self.metrics)?;
        let aggregate = Arc::clone(&self.aggregate);
        let schema = self.aggregate.schema();
        let batches = futures::stream::once(async move {
            match execution.share(partition, sources).await {
                Ok(rows) => {
                    let batches = merge.run(rows)?;
                    Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed())
                }
                // The states did not fit the memory pool (and are freed by now): DataFusion's
                // operators, which spill, start over from the partial aggregation.
                Err(e) if out_of_memory(&e) => {
                    let fallback = execution.fallback(&aggregate)?;
                    Ok(fallback.execute(partition, context)?.boxed())
                }
                Err(e) => Err(e),
            }
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The context of the error that says the pool refused the partial states.
const STATES_REFUSED: &str = "RunFinalExec: the partial states do not fit the memory pool";

/// Whether `error` is this operator's own refused reservation (an input's out-of-memory error
/// would only recur in the fallback).
fn out_of_memory(error: &DataFusionError) -> bool {
    let error = match error {
        DataFusionError::Shared(inner) => inner.as_ref(),
        other => other,
    };
    matches!(error, DataFusionError::Context(what, _) if what == STATES_REFUSED)
}

/// What the output partitions need to collect the partial states.
struct Sources {
    input: Arc<dyn ExecutionPlan>,
    hash: Vec<Arc<dyn PhysicalExpr>>,
    outputs: usize,
    context: Arc<TaskContext>,
}

/// One partial partition's states: its first key, and its rows per output partition.
struct Collected {
    first_key: Option<ScalarValue>,
    rows: Vec<Vec<RecordBatch>>,
    reservation: MemoryReservation,
}

/// Every partial partition's states, per output partition in merge order, until that
/// partition takes them; accounted in the memory pool while the execution lasts.
#[derive(Debug)]
struct Shares {
    rows: Vec<Mutex<Vec<RecordBatch>>>,
    _reservations: Vec<MemoryReservation>,
}

/// The partial states of one execution, collected once for all output partitions.
#[derive(Debug, Default)]
struct Execution {
    shares: tokio::sync::OnceCell<Result<Shares, Arc<DataFusionError>>>,
    /// The original operators, made once for all output partitions when the states do not fit.
    fallback: std::sync::OnceLock<Result<Arc<dyn ExecutionPlan>, Arc<DataFusionError>>>,
}

impl Execution {
    /// A fresh copy of `aggregate` to run instead, shared by the output partitions: its scans
    /// have already been read once for the partial states, and a scan whose partitions take
    /// files from one shared queue (DataFusion's file scans) would find it empty and return no
    /// rows at all. The copy's state is new; the repartitioning in it reads the input once.
    fn fallback(&self, aggregate: &Arc<AggregateExec>) -> Result<Arc<dyn ExecutionPlan>> {
        self.fallback
            .get_or_init(|| {
                reset_plan_states(Arc::clone(aggregate) as Arc<dyn ExecutionPlan>).map_err(Arc::new)
            })
            .clone()
            .map_err(DataFusionError::Shared)
    }

    /// The rows of output partition `output`, collecting every partial partition first.
    async fn share(&self, output: usize, sources: Sources) -> Result<Vec<RecordBatch>> {
        let shares = self
            .shares
            .get_or_init(|| async { collect_all(sources).await.map_err(Arc::new) })
            .await
            .as_ref()
            .map_err(|e| DataFusionError::Shared(Arc::clone(e)))?;
        let share = shares
            .rows
            .get(output)
            .ok_or_else(|| internal_datafusion_err!("RunFinalExec has no partition {output}"))?;
        Ok(std::mem::take(&mut *share.lock().expect("share lock")))
    }
}

/// Runs every partial partition at once (each in its own task, so no output partition waits on
/// another's consumer) and arranges the rows per output partition, sources by first key.
async fn collect_all(sources: Sources) -> Result<Shares> {
    let partitions = sources
        .input
        .properties()
        .output_partitioning()
        .partition_count();
    let tasks: Vec<SpawnedTask<Result<Collected>>> = (0..partitions)
        .map(|partition| {
            let stream = sources
                .input
                .execute(partition, Arc::clone(&sources.context));
            let hash = sources.hash.clone();
            let (outputs, context) = (sources.outputs, Arc::clone(&sources.context));
            SpawnedTask::spawn(async move {
                collect(stream?, &hash, outputs, partition, &context).await
            })
        })
        .collect();
    let mut collected = Vec::with_capacity(tasks.len());
    for task in tasks {
        collected.push(
            task.join_unwind()
                .await
                .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??,
        );
    }
    // Sources without keys first; NULL keys go wherever they are, as one group.
    collected.sort_by(|a, b| match (&a.first_key, &b.first_key) {
        (Some(a), Some(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
        (a, b) => a.is_some().cmp(&b.is_some()),
    });
    let mut rows: Vec<Vec<RecordBatch>> = vec![Vec::new(); sources.outputs];
    let mut reservations = Vec::with_capacity(collected.len());
    for source in collected {
        for (share, source_rows) in rows.iter_mut().zip(source.rows) {
            share.extend(source_rows);
        }
        reservations.push(source.reservation);
    }
    Ok(Shares {
        rows: rows.into_iter().map(Mutex::new).collect(),
        _reservations: reservations,
    })
}

/// Reads one partial partition, sending each row where the hash repartitioning would.
async fn collect(
    mut stream: SendableRecordBatchStream,
    hash: &[Arc<dyn PhysicalExpr>],
    outputs: usize,
    partition: usize,
    context: &TaskContext,
) -> Result<Collected> {
    let mut collected = Collected {
        first_key: None,
        rows: vec![Vec::new(); outputs],
        reservation: MemoryConsumer::new(format!("RunFinalExec[{partition}]"))
            .register(context.memory_pool()),
    };
    let mut hashes = Vec::new();
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); outputs];
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        collected
            .reservation
            .try_grow(batch.get_array_memory_size())
            .map_err(|e| e.context(STATES_REFUSED))?;
        let keys: Vec<ArrayRef> = hash
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
            .collect::<Result<_>>()?;
        if collected.first_key.is_none()
            && let Some(row) = (0..batch.num_rows()).find(|&row| keys[0].is_valid(row))
        {
            collected.first_key = Some(ScalarValue::try_from_array(&keys[0], row)?);
        }
        if outputs == 1 {
            collected.rows[0].push(batch);
            continue;
        }
        hashes.clear();
        hashes.resize(batch.num_rows(), 0);
        create_hashes(&keys, REPARTITION_RANDOM_STATE.random_state(), &mut hashes)?;
        indices.iter_mut().for_each(Vec::clear);
        for (row, hash) in hashes.iter().enumerate() {
            indices[(hash % outputs as u64) as usize].push(row as u32);
        }
        for (rows, output) in indices.iter().zip(&mut collected.rows) {
            if !rows.is_empty() {
                let rows = UInt32Array::from(rows.clone());
                output.push(take_record_batch(&batch, &rows)?);
            }
        }
    }
    Ok(collected)
}

/// One output partition's merge of the states of its groups.
struct Merge {
    aggregate: Arc<AggregateExec>,
    /// Columns of each aggregate's states in the partial output.
    states: Vec<Range<usize>>,
    batch_size: usize,
    metrics: BaselineMetrics,
}

impl Merge {
    fn new(
        aggregate: &Arc<AggregateExec>,
        partition: usize,
        context: &TaskContext,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Self> {
        let mut next = 1;
        let states = aggregate
            .aggr_expr()
            .iter()
            .map(|a| {
                let count = a.state_fields()?.len();
                next += count;
                Ok(next - count..next)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            aggregate: Arc::clone(aggregate),
            states,
            batch_size: context.session_config().batch_size().max(1),
            metrics: BaselineMetrics::new(metrics, partition),
        })
    }

    fn run(&mut self, rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let timer = self.metrics.elapsed_compute().clone();
        let _timer = timer.timer();
        let key = &self.aggregate.group_expr().expr()[0].0;
        // The key's column in the partial states; `input_schema()` of a final aggregation is the
        // schema of the rows the partial aggregation read.
        let key_type = key.data_type(&self.aggregate.input().schema())?;
        let mut groups = run_groups(&key_type)
            .ok_or_else(|| internal_datafusion_err!("RunFinalExec planned for a {key_type} key"))?;
        let mut accumulators = self
            .aggregate
            .aggr_expr()
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let mut group_indices = Vec::new();
        for batch in rows {
            let keys = key.evaluate(&batch)?.into_array(batch.num_rows())?;
            group_indices.clear();
            groups.intern(&keys, &mut group_indices);
            for (accumulator, states) in accumulators.iter_mut().zip(&self.states) {
                accumulator.merge_batch(
                    &batch.columns()[states.clone()],
                    &group_indices,
                    groups.len(),
                )?;
            }
        }
        if groups.len() == 0 {
            self.metrics.done();
            return Ok(Vec::new());
        }
        let mut columns = vec![groups.take()];
        for accumulator in &mut accumulators {
            columns.push(accumulator.evaluate(EmitTo::All)?);
        }
        let result = RecordBatch::try_new(self.aggregate.schema(), columns)?;
        let batches: Vec<RecordBatch> = (0..result.num_rows())
            .step_by(self.batch_size)
            .map(|start| result.slice(start, self.batch_size.min(result.num_rows() - start)))
            .collect();
        self.metrics.record_output(result.num_rows());
        self.metrics.done();
        Ok(batches)
    }
}

//! The one admission path for SQL statements, whatever endpoint or RPC carries them (Flight SQL
//! queries, updates, prepared statements; later the PostgreSQL endpoint): a concurrency slot,
//! the statement timeout for queries, cancellation, the result limits, and the engine's memory
//! pool and depth checks. Writes take a slot but run to completion: stopping one half way would
//! only waste its work, since a commit is atomic either way.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow_flight::error::FlightError;
use cohort_engine::depth::PlanningStack;
use cohort_engine::statement::parameter_types;
use cohort_engine::{Classified, Dialect, Engine, StatementOutcome};
use datafusion::common::ScalarValue;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::Status;

use crate::auth::Principal;
use crate::limits::Governor;
use crate::query_log::QueryLog;
use crate::status::{datafusion_status, engine_status};

/// A query's batches as the engine produces them (logical types), bounded by the limits.
pub type QueryStream = BoxStream<'static, Result<arrow::array::RecordBatch, FlightError>>;

/// What running a statement produced.
pub enum Ran {
    /// A data-changing statement ran to completion.
    RowsAffected(u64),
    /// A query: its schema, and its batches, which hold the statement's slot until they end.
    Query {
        schema: SchemaRef,
        stream: QueryStream,
    },
}

/// What a statement's description (a FlightInfo, a prepared statement) needs.
pub enum Described {
    RowsAffected(u64),
    Query(SchemaRef),
}

pub struct Statements {
    engine: Arc<Engine>,
    governor: Arc<Governor>,
    dialect: Dialect,
}

/// What a statement returns, known before it runs.
#[derive(Debug, Clone)]
pub enum Shape {
    /// A data-changing statement: a row count, and its parameters' types.
    Write { parameters: Vec<Option<DataType>> },
    /// A query: its columns and its parameters' types (by position, `None` where the plan
    /// does not tell).
    Rows {
        schema: SchemaRef,
        parameters: Vec<Option<DataType>>,
    },
}

impl Statements {
    /// The statements of Flight SQL clients.
    pub fn new(engine: Arc<Engine>, governor: Arc<Governor>) -> Self {
        Self::in_dialect(engine, governor, Dialect::Cohort)
    }

    /// The statements of clients of `dialect` (PostgreSQL clients' queries see `pg_catalog`).
    pub fn in_dialect(engine: Arc<Engine>, governor: Arc<Governor>, dialect: Dialect) -> Self {
        Self {
            engine,
            governor,
            dialect,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn governor(&self) -> &Arc<Governor> {
        &self.governor
    }

    /// Checks and classifies `sql` for `principal` before it takes a slot: a refused
    /// statement never waits in the queue.
    fn classify(&self, principal: &Principal, sql: &str) -> Result<Classified, Status> {
        self.engine
            .classify_in(self.dialect, principal.role.access(), sql)
            .map_err(engine_status)
    }

    /// Admits a classified statement (timed unless it writes) and plans it, or runs it if it
    /// writes.
    async fn admit_and_plan(
        &self,
        statement: Classified,
        values: Option<Vec<ScalarValue>>,
        query_id: Option<&str>,
    ) -> Result<(crate::limits::Admitted, StatementOutcome), Status> {
        let admitted = self.governor.admit(query_id, !statement.writes()).await?;
        let outcome = admitted
            .run(async {
                self.engine
                    .execute_classified(statement, values)
                    .await
                    .map_err(engine_status)
            })
            .await?;
        Ok((admitted, outcome))
    }

    /// Plans a query for its schema (nothing runs), or runs a data-changing statement.
    pub async fn describe(
        &self,
        principal: &Principal,
        sql: &str,
        values: Option<Vec<ScalarValue>>,
    ) -> Result<Described, Status> {
        // A write ends here and a failure stops the statement: both are logged now; a query
        // is logged when it runs.
        let described = self.describe_unlogged(principal, sql, values).await;
        let log = || QueryLog::start(None, &principal.name, sql);
        match &described {
            Ok(Described::RowsAffected(rows)) => log().add_rows(*rows),
            Err(status) => log().failed(status),
            Ok(Described::Query(_)) => {}
        }
        described
    }

    async fn describe_unlogged(
        &self,
        principal: &Principal,
        sql: &str,
        values: Option<Vec<ScalarValue>>,
    ) -> Result<Described, Status> {
        let statement = self.classify(principal, sql)?;
        let (_admitted, outcome) = self.admit_and_plan(statement, values, None).await?;
        Ok(match outcome {
            StatementOutcome::RowsAffected(rows) => Described::RowsAffected(rows),
            StatementOutcome::Query(df) => {
                Described::Query(Arc::new(df.schema().as_arrow().clone()))
            }
        })
    }

    /// What `sql` returns, without running it: a query is planned (under a slot), a write's
    /// source query too (for its parameters' types).
    pub async fn shape(&self, principal: &Principal, sql: &str) -> Result<Shape, Status> {
        let shape = self.shape_unlogged(principal, sql).await;
        // A statement that cannot be described is never run: its failure is logged here,
        // a success when it runs.
        if let Err(status) = &shape {
            QueryLog::start(None, &principal.name, sql).failed(status);
        }
        shape
    }

    async fn shape_unlogged(&self, principal: &Principal, sql: &str) -> Result<Shape, Status> {
        let statement = self.classify(principal, sql)?;
        if statement.writes() {
            // Planned under a slot like a query's describe; nothing is written.
            let admitted = self.governor.admit(None, true).await?;
            let parameters = admitted
                .run(async {
                    self.engine
                        .write_parameter_types(&statement)
                        .await
                        .map_err(engine_status)
                })
                .await?;
            return Ok(Shape::Write { parameters });
        }
        let (_admitted, outcome) = self.admit_and_plan(statement, None, None).await?;
        let StatementOutcome::Query(df) = outcome else {
            return Ok(Shape::Write {
                parameters: Vec::new(),
            });
        };
        Ok(Shape::Rows {
            schema: Arc::new(df.schema().as_arrow().clone()),
            parameters: parameter_types(df.logical_plan()).map_err(engine_status)?,
        })
    }

    /// Runs a statement; a query's rows stream under its deadline, cancellation and limits.
    /// `query_id` registers it for cancellation. Every statement is logged when it ends.
    pub async fn run(
        &self,
        principal: &Principal,
        sql: &str,
        values: Option<Vec<ScalarValue>>,
        query_id: Option<&str>,
    ) -> Result<Ran, Status> {
        let log = QueryLog::start(query_id, &principal.name, sql);
        match self.run_unlogged(principal, sql, values, query_id).await {
            Err(status) => {
                log.failed(&status);
                Err(status)
            }
            Ok(Ran::RowsAffected(rows)) => {
                log.add_rows(rows);
                Ok(Ran::RowsAffected(rows))
            }
            Ok(Ran::Query { schema, stream }) => {
                // The log line is written when the stream is dropped: drained, failed or
                // abandoned.
                let stream = stream
                    .inspect(move |batch| match batch {
                        Ok(batch) => log.add_rows(batch.num_rows() as u64),
                        Err(FlightError::Tonic(status)) => log.failed(status),
                        Err(other) => log.failed(&Status::internal(other.to_string())),
                    })
                    .boxed();
                Ok(Ran::Query { schema, stream })
            }
        }
    }

    async fn run_unlogged(
        &self,
        principal: &Principal,
        sql: &str,
        values: Option<Vec<ScalarValue>>,
        query_id: Option<&str>,
    ) -> Result<Ran, Status> {
        let statement = self.classify(principal, sql)?;
        let (admitted, outcome) = self.admit_and_plan(statement, values, query_id).await?;
        let df = match outcome {
            StatementOutcome::RowsAffected(rows) => return Ok(Ran::RowsAffected(rows)),
            StatementOutcome::Query(df) => df,
        };
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        // Optimising and physical planning walk the plan: on the planning stack too.
        let batches = admitted
            .run(async {
                PlanningStack::new(df.execute_stream())
                    .await
                    .map_err(|e| datafusion_status(&e))
            })
            .await?;
        let batches = batches
            .map(|batch| batch.map_err(|e| FlightError::Tonic(Box::new(datafusion_status(&e)))))
            .boxed();
        Ok(Ran::Query {
            schema,
            stream: self.governor.limit_stream(admitted, batches).boxed(),
        })
    }

    /// Runs a statement for its row count (the update path): a query's rows are counted as
    /// they stream, never held, under the same deadline and limits as a fetched result.
    pub async fn run_for_count(
        &self,
        principal: &Principal,
        sql: &str,
        values: Option<Vec<ScalarValue>>,
    ) -> Result<u64, Status> {
        match self.run(principal, sql, values, None).await? {
            Ran::RowsAffected(rows) => Ok(rows),
            Ran::Query { mut stream, .. } => {
                let mut rows = 0u64;
                while let Some(batch) = stream.next().await {
                    rows += batch.map_err(flight_status)?.num_rows() as u64;
                }
                Ok(rows)
            }
        }
    }
}

impl Statements {
    /// Runs a statement for each row of bound parameters (the update path). A write runs under
    /// one slot, and an INSERT's rows are one commit; a query is run and counted per row.
    pub async fn run_each_for_count(
        &self,
        principal: &Principal,
        sql: &str,
        rows: Vec<Vec<ScalarValue>>,
    ) -> Result<u64, Status> {
        let statement = match self.classify(principal, sql) {
            Ok(statement) => statement,
            Err(status) => {
                QueryLog::start(None, &principal.name, sql).failed(&status);
                return Err(status);
            }
        };
        if !statement.writes() {
            // One run per row, each logged by `run`.
            let mut total = 0;
            for values in rows {
                total += self.run_for_count(principal, sql, Some(values)).await?;
            }
            return Ok(total);
        }
        let log = QueryLog::start(None, &principal.name, sql);
        let result = async {
            let admitted = self.governor.admit(None, false).await?;
            admitted
                .run(async {
                    self.engine
                        .execute_each_classified(statement, rows)
                        .await
                        .map_err(engine_status)
                })
                .await
        }
        .await;
        log.ended(&result);
        result
    }
}

/// The gRPC status a result stream's error carries.
pub fn flight_status(error: FlightError) -> Status {
    match error {
        FlightError::Tonic(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

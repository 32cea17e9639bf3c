//! Bounded depth for every statement, whatever operator builds the chain.
//!
//! Parsing, planning, optimising, evaluating, cloning, hashing and dropping a statement all
//! recurse over its trees. sqlparser builds postfix and infix chains (`x::BIGINT::BIGINT...`,
//! `a IS TRUE IS TRUE ...`, `... UNION ALL ...`, `x LIKE y LIKE z ...`) in a loop, so well under
//! `max_sql_bytes` a statement becomes a tree 100,000 levels deep. DataFusion's and sqlparser's
//! `recursive_protection` grow the stack inside their planner and tree walks, but the derived
//! `Clone`, `Drop`, `PartialEq`, `Hash` and `Display` of those trees recurse unguarded, and one
//! overflow aborts the whole server. Guarding the recursion site by site cannot be complete, so
//! the defence is structural, in two parts:
//!
//! 1. **Measure and refuse.** Right after parsing, [`check_statement`] measures the syntax tree
//!    with a walk that stops as soon as the depth passes `max_depth` (every expression, query,
//!    set operation, joined relation, table factor and data type counts one level); after SQL
//!    planning, [`check_plan`] measures the logical plan (plan nodes, their expressions,
//!    subqueries, data types) without recursing, within a node budget that also stops
//!    exponential plans (CTEs that reference earlier CTEs twice). A statement that passes both
//!    is shallow enough for every later stage on an ordinary worker stack.
//! 2. **Room to refuse.** A refused tree must still be built and dropped. [`on_planning_stack`]
//!    and [`PlanningStack`] run the front half of a statement (parse, checks, SQL planning and
//!    dropping what they built) on a [`PLANNING_STACK_BYTES`] stack segment (stacker, the
//!    crate `recursive_protection` itself uses). Stack use grows with depth, depth with SQL
//!    length, and `max_sql_bytes` bounds the length, so the segment holds any tree an admitted
//!    text can produce; the hostile end-to-end tests send the worst chains at the size limit.
//!    The segment is reserved address space: only the pages a statement touches are committed.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::DataType as ArrowType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, DataType as SqlType, Expr as SqlExpr, ObjectName, Query, Select, SetExpr,
    Statement, TableFactor, Visit, Visitor,
};

use crate::error::{EngineError, Result};

/// The stack segment statements are parsed and planned on (address space, committed lazily).
pub const PLANNING_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Most nodes (plan nodes and expressions) one logical plan may have.
pub const MAX_PLAN_NODES: usize = 2_000_000;

/// Runs `work` on the planning stack segment.
pub fn on_planning_stack<T>(work: impl FnOnce() -> T) -> T {
    stacker::grow(PLANNING_STACK_BYTES, work)
}

/// A future whose every poll, and whose drop, runs on the planning stack segment: planning is
/// async (table providers are resolved from the store), and a statement dropped half way
/// (timeout, cancellation) drops its trees too.
pub struct PlanningStack<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> PlanningStack<F> {
    pub fn new(inner: F) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<F: Future> Future for PlanningStack<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(inner) = self.inner.as_mut() else {
            panic!("PlanningStack polled after completion");
        };
        let poll = on_planning_stack(|| inner.as_mut().poll(cx));
        if poll.is_ready() {
            let done = self.inner.take();
            on_planning_stack(move || drop(done));
        }
        poll
    }
}

impl<F> Drop for PlanningStack<F> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            on_planning_stack(move || drop(inner));
        }
    }
}

fn too_deep(max_depth: usize, what: &str) -> EngineError {
    EngineError::LimitExceeded(format!(
        "{what} nests more than {max_depth} levels deep (max_depth): casts, IS, LIKE, set \
         operations, joins, CASE, calls and subqueries each add a level"
    ))
}

/// Refuses a parsed statement whose syntax tree is deeper than `max_depth`. The walk stops at
/// the limit, so its own recursion is bounded by it.
pub fn check_statement(statement: &DFStatement, max_depth: usize) -> Result<()> {
    match statement {
        DFStatement::Statement(inner) => check_sql_statement(inner, max_depth),
        DFStatement::Explain(explain) => check_statement(&explain.statement, max_depth),
        DFStatement::CopyTo(copy) => match &copy.source {
            datafusion::sql::parser::CopyToSource::Query(query) => {
                probe(max_depth, |probe| query.visit(probe))
            }
            datafusion::sql::parser::CopyToSource::Relation(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// [`check_statement`] for a statement sqlparser parsed directly (another dialect's).
pub fn check_sql_statement(statement: &Statement, max_depth: usize) -> Result<()> {
    probe(max_depth, |probe| statement.visit(probe))
}

fn probe(max_depth: usize, visit: impl FnOnce(&mut DepthProbe) -> ControlFlow<()>) -> Result<()> {
    let mut probe = DepthProbe {
        max_depth,
        depth: 0,
        cte_copies_over: None,
        entered: Vec::new(),
    };
    let flow = visit(&mut probe);
    if let Some(copies) = probe.cte_copies_over {
        return Err(EngineError::LimitExceeded(format!(
            "the common table expressions of this statement expand to {copies} or more copies \
             of their queries (a CTE referred to twice by another referred to twice ... doubles \
             each time); at most {MAX_CTE_COPIES} are planned"
        )));
    }
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(too_deep(max_depth, "statement")),
    }
}

/// Most copies of common table expressions one statement may expand to: DataFusion plans a
/// CTE again at every reference, so CTEs that refer to earlier ones several times multiply.
pub const MAX_CTE_COPIES: usize = 10_000;

/// How many copies of CTE queries `query`'s WITH clause expands to when planned. Runs after
/// the query's depth was checked, so the walks below are bounded.
fn cte_copies(query: &Query) -> usize {
    let Some(with) = &query.with else {
        return 0;
    };
    let mut sizes: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let references = |node: &dyn VisitNode, sizes: &std::collections::HashMap<String, usize>| {
        let mut collector = RelationCollector { sizes, copies: 0 };
        let _ = node.visit_node(&mut collector);
        collector.copies
    };
    for cte in &with.cte_tables {
        let size = 1usize.saturating_add(references(&*cte.query, &sizes));
        sizes.insert(
            cte.alias.name.value.to_lowercase(),
            size.min(MAX_CTE_COPIES + 1),
        );
    }
    references(&*query.body, &sizes)
}

/// Lets one collector walk a query or a query body.
trait VisitNode {
    fn visit_node(&self, visitor: &mut RelationCollector<'_>) -> ControlFlow<()>;
}

impl VisitNode for Query {
    fn visit_node(&self, visitor: &mut RelationCollector<'_>) -> ControlFlow<()> {
        self.visit(visitor)
    }
}

impl VisitNode for SetExpr {
    fn visit_node(&self, visitor: &mut RelationCollector<'_>) -> ControlFlow<()> {
        self.visit(visitor)
    }
}

struct RelationCollector<'a> {
    sizes: &'a std::collections::HashMap<String, usize>,
    copies: usize,
}

impl Visitor for RelationCollector<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let [part] = relation.0.as_slice()
            && let Some(ident) = part.as_ident()
            && let Some(size) = self.sizes.get(&ident.value.to_lowercase())
        {
            self.copies = self.copies.saturating_add(*size);
        }
        ControlFlow::Continue(())
    }
}

struct DepthProbe {
    max_depth: usize,
    depth: usize,
    /// Set when a WITH clause expands to more than [`MAX_CTE_COPIES`] copies.
    cte_copies_over: Option<usize>,
    /// Levels each open node added, popped by its post-visit.
    entered: Vec<usize>,
}

impl DepthProbe {
    fn enter(&mut self, levels: usize) -> ControlFlow<()> {
        self.depth += levels;
        self.entered.push(levels);
        if self.depth > self.max_depth {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self) -> ControlFlow<()> {
        self.depth -= self.entered.pop().unwrap_or(0);
        ControlFlow::Continue(())
    }
}

impl Visitor for DepthProbe {
    type Break = ();

    // A query's set operations form a chain under it that has no visitor hook of its own;
    // it is measured here, before the walk descends into it.
    // A chain of CTEs, each reading the one before, plans into a chain of that length.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let ctes = query.with.as_ref().map_or(0, |w| w.cte_tables.len());
        self.enter(1 + set_operation_chain(&query.body) + ctes)
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let copies = cte_copies(query);
        if copies > MAX_CTE_COPIES {
            self.cte_copies_over = Some(copies);
            return ControlFlow::Break(());
        }
        self.leave()
    }

    // Each relation of a FROM list or JOIN chain plans into one more level of a join tree.
    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        let relations: usize = select.from.iter().map(|t| 1 + t.joins.len()).sum();
        self.enter(1 + relations)
    }

    fn post_visit_select(&mut self, _: &Select) -> ControlFlow<()> {
        self.leave()
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<()> {
        self.enter(1)
    }

    fn post_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<()> {
        self.leave()
    }

    fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<()> {
        let type_levels = match expr {
            SqlExpr::Cast { data_type, .. } => sql_type_depth(data_type),
            _ => 0,
        };
        self.enter(1 + type_levels)
    }

    fn post_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.leave()
    }
}

/// Length of the longest chain of set operations below `body`, walked without recursion
/// along the left operands (where sqlparser builds the chain) and across right operands.
fn set_operation_chain(body: &SetExpr) -> usize {
    let mut longest = 0;
    let mut pending = vec![(body, 0usize)];
    while let Some((node, depth)) = pending.pop() {
        match node {
            SetExpr::SetOperation { left, right, .. } => {
                pending.push((left, depth + 1));
                pending.push((right, depth + 1));
            }
            _ => longest = longest.max(depth),
        }
    }
    longest
}

/// Nesting of a SQL data type (`INT[][]...`, `STRUCT<...>`), without recursion.
fn sql_type_depth(data_type: &SqlType) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(data_type, 0usize)];
    while let Some((data_type, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        match data_type {
            SqlType::Array(ArrayElemTypeDef::SquareBracket(inner, _))
            | SqlType::Array(ArrayElemTypeDef::AngleBracket(inner))
            | SqlType::Array(ArrayElemTypeDef::Parenthesis(inner))
            | SqlType::Nullable(inner)
            | SqlType::LowCardinality(inner) => pending.push((inner, depth + 1)),
            SqlType::Map(key, value) => {
                pending.push((key, depth + 1));
                pending.push((value, depth + 1));
            }
            SqlType::Struct(fields, _) => {
                pending.extend(fields.iter().map(|f| (&f.field_type, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Nesting of an Arrow data type, without recursion.
fn arrow_type_depth(data_type: &ArrowType) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(data_type, 0usize)];
    while let Some((data_type, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        match data_type {
            ArrowType::List(field)
            | ArrowType::LargeList(field)
            | ArrowType::ListView(field)
            | ArrowType::LargeListView(field)
            | ArrowType::FixedSizeList(field, _)
            | ArrowType::Map(field, _) => pending.push((field.data_type(), depth + 1)),
            ArrowType::Struct(fields) => {
                pending.extend(fields.iter().map(|f| (f.data_type(), depth + 1)));
            }
            ArrowType::Union(fields, _) => {
                pending.extend(fields.iter().map(|(_, f)| (f.data_type(), depth + 1)));
            }
            ArrowType::Dictionary(key, value) => {
                pending.push((key, depth + 1));
                pending.push((value, depth + 1));
            }
            ArrowType::RunEndEncoded(ends, values) => {
                pending.push((ends.data_type(), depth + 1));
                pending.push((values.data_type(), depth + 1));
            }
            _ => {}
        }
    }
    deepest
}

/// Refuses a logical plan deeper than `max_depth` (a plan node, an expression and a data type
/// level each count one) or with more than [`MAX_PLAN_NODES`] nodes. Iterative: the plan may be
/// as deep as the SQL planner made it.
pub fn check_plan(plan: &LogicalPlan, max_depth: usize) -> Result<()> {
    let mut walk = PlanWalk {
        max_depth,
        nodes: 0,
    };
    walk.plan(plan, 0)
}

struct PlanWalk {
    max_depth: usize,
    nodes: usize,
}

impl PlanWalk {
    fn count(&mut self, depth: usize) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_PLAN_NODES {
            return Err(EngineError::LimitExceeded(format!(
                "the query plans into more than {MAX_PLAN_NODES} nodes: simplify it (common \
                 table expressions that refer to earlier ones several times multiply)"
            )));
        }
        if depth > self.max_depth {
            return Err(too_deep(self.max_depth, "query plan"));
        }
        Ok(())
    }

    /// Plan nodes iteratively; each subquery recursively (their nesting is bounded by the
    /// syntax tree check, as a subquery needs parentheses).
    fn plan(&mut self, root: &LogicalPlan, base: usize) -> Result<()> {
        let mut pending = vec![(root, base)];
        while let Some((plan, depth)) = pending.pop() {
            self.count(depth)?;
            let mut subqueries: Vec<(Arc<LogicalPlan>, usize)> = Vec::new();
            let mut failure = None;
            let _ =
                plan.apply_expressions(|expr| match self.expr(expr, depth + 1, &mut subqueries) {
                    Ok(()) => Ok(TreeNodeRecursion::Continue),
                    Err(e) => {
                        failure = Some(e);
                        Ok(TreeNodeRecursion::Stop)
                    }
                });
            if let Some(e) = failure {
                return Err(e);
            }
            for field in plan.schema().fields() {
                if arrow_type_depth(field.data_type()) + depth > self.max_depth {
                    return Err(too_deep(self.max_depth, "a column's data type"));
                }
            }
            for (subquery, at) in subqueries {
                self.plan(&subquery, at)?;
            }
            pending.extend(plan.inputs().into_iter().map(|input| (input, depth + 1)));
        }
        Ok(())
    }

    fn expr<'e>(
        &mut self,
        root: &'e Expr,
        base: usize,
        subqueries: &mut Vec<(Arc<LogicalPlan>, usize)>,
    ) -> Result<()> {
        let mut pending: Vec<(&'e Expr, usize)> = vec![(root, base)];
        while let Some((expr, depth)) = pending.pop() {
            self.count(depth)?;
            match expr {
                Expr::Cast(cast) => {
                    self.count(depth + arrow_type_depth(cast.field.data_type()))?;
                }
                Expr::TryCast(cast) => {
                    self.count(depth + arrow_type_depth(cast.field.data_type()))?;
                }
                Expr::ScalarSubquery(subquery) => {
                    subqueries.push((Arc::clone(&subquery.subquery), depth + 1));
                }
                Expr::Exists(exists) => {
                    subqueries.push((Arc::clone(&exists.subquery.subquery), depth + 1));
                }
                Expr::InSubquery(in_subquery) => {
                    subqueries.push((Arc::clone(&in_subquery.subquery.subquery), depth + 1));
                }
                _ => {}
            }
            let _ = expr.apply_children(|child| {
                pending.push((child, depth + 1));
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    fn check(sql: &str, max_depth: usize) -> Result<()> {
        on_planning_stack(|| {
            let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
                .map_err(crate::error::statement_error)?;
            check_statement(&statements.pop_front().expect("one statement"), max_depth)
        })
    }

    fn assert_too_deep(sql: &str) {
        let err = check(sql, 100).unwrap_err();
        assert!(err.to_string().contains("max_depth"), "{err}");
    }

    #[test]
    fn every_chain_builder_counts() {
        let n = 20_000;
        assert_too_deep(&format!("SELECT 1{}", "::BIGINT".repeat(n)));
        assert_too_deep(&format!("SELECT 1 WHERE true{}", " IS TRUE".repeat(n)));
        assert_too_deep(&vec!["SELECT 1"; n].join(" UNION ALL "));
        assert_too_deep(&vec!["SELECT 1"; n].join(" INTERSECT "));
        assert_too_deep(&format!("SELECT 'a'{}", " LIKE 'a'".repeat(n)));
        assert_too_deep(&format!("SELECT 1{}", " IN (1)".repeat(n)));
        assert_too_deep(&format!("SELECT * FROM {}", vec!["t"; n].join(", ")));
        assert_too_deep(&format!("SELECT * FROM t{}", " JOIN t USING (x)".repeat(n)));
        assert_too_deep(&format!("SELECT CAST(1 AS INT{})", "[]".repeat(n)));
    }

    #[test]
    fn ctes_that_multiply_are_refused_before_planning() {
        let doubling: Vec<String> = (1..40)
            .map(|i| {
                format!(
                    "c{i} AS (SELECT x FROM c{p} UNION ALL SELECT x FROM c{p})",
                    p = i - 1
                )
            })
            .collect();
        let sql = format!(
            "WITH c0 AS (SELECT 1 AS x), {} SELECT * FROM c39",
            doubling.join(", ")
        );
        let err = check(&sql, 1000).unwrap_err();
        assert!(err.to_string().contains("copies"), "{err}");
        // Ten doublings are 1,024 copies: planned.
        let sql = format!(
            "WITH c0 AS (SELECT 1 AS x), {} SELECT * FROM c10",
            doubling[..10].join(", ")
        );
        check(&sql, 1000).unwrap();
        let chain: Vec<String> = (1..2000)
            .map(|i| format!("c{i} AS (SELECT x FROM c{})", i - 1))
            .collect();
        let sql = format!(
            "WITH c0 AS (SELECT 1 AS x), {} SELECT * FROM c1999",
            chain.join(", ")
        );
        let err = check(&sql, 1000).unwrap_err();
        assert!(err.to_string().contains("max_depth"), "{err}");
    }

    #[test]
    fn ordinary_statements_pass() {
        check("SELECT a, b FROM t WHERE a = 1 OR b = 2", 100).unwrap();
        check(&vec!["SELECT 1"; 90].join(" UNION ALL "), 100).unwrap();
        let or_chain: Vec<String> = (0..1000).map(|i| format!("x = {i}")).collect();
        check(
            &format!("SELECT * FROM t WHERE {}", or_chain.join(" OR ")),
            crate::StatementLimits::default().max_depth,
        )
        .unwrap();
    }

    #[test]
    fn the_walk_stops_at_the_limit_without_recursing_further() {
        // 200,000 levels: a walk that did not stop at the limit would need far more stack
        // than the planning segment's share for the walk.
        assert_too_deep(&format!("SELECT 1{}", "::INT".repeat(200_000)));
    }

    #[tokio::test]
    async fn deep_plans_are_refused_and_dropped_safely() {
        let ctx = datafusion::prelude::SessionContext::new();
        let ctes: Vec<String> = (1..200)
            .map(|i| format!("c{i} AS (SELECT x FROM c{})", i - 1))
            .collect();
        let sql = format!(
            "WITH c0 AS (SELECT 1 AS x), {} SELECT * FROM c199",
            ctes.join(", ")
        );
        let result = PlanningStack::new(async {
            let plan = ctx.state().create_logical_plan(&sql).await?;
            check_plan(&plan, 100)
        })
        .await;
        let err = result.unwrap_err();
        assert!(err.to_string().contains("max_depth"), "{err}");
    }

    #[test]
    fn plans_sharing_subtrees_stop_at_the_node_budget() {
        use datafusion::logical_expr::{LogicalPlanBuilder, Union};
        let mut plan = LogicalPlanBuilder::empty(true).build().unwrap();
        for _ in 0..40 {
            let shared = Arc::new(plan);
            plan = LogicalPlan::Union(Union {
                schema: Arc::clone(shared.schema()),
                inputs: vec![Arc::clone(&shared), shared],
            });
        }
        let err = check_plan(&plan, 1000).unwrap_err();
        assert!(err.to_string().contains("nodes"), "{err}");
    }
}

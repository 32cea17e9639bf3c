//! Built-in functions whose output size is chosen by an argument, checked before they run.
//!
//! DataFusion accounts operators' memory in its pool, but not what a scalar function
//! allocates: `SELECT range(0, 5000000000)` builds a 40 GB list, `repeat('x', 10000000000)` a
//! 10 GB string, and an allocation that large aborts the process (Rust does not recover from a
//! failed allocation). These functions are registered again under their own names, wrapping
//! DataFusion's implementations: before each call the output size the arguments ask for is
//! computed and refused past [`MAX_OUTPUT_ELEMENTS`] for the whole batch, with a
//! `ResourcesExhausted` error. Everything else (signature, types, simplification, docs) is the
//! wrapped function's. Constant folding calls the function too, so literal arguments are
//! checked at planning.
//!
//! | function | counted |
//! |---|---|
//! | `range`, `generate_series` (scalar forms) | elements: (stop - start) / step per row |
//! | `array_repeat(element, count)` | elements: `count` per row |
//! | `array_resize(array, size, ...)` | elements: `size` per row |
//! | `repeat(text, n)` | bytes: length of `text` x `n` per row |
//! | `lpad`, `rpad(text, n, ...)` | characters: `n` per row |

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalUnit, TimeUnit};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// Most elements (or bytes, or characters) one call of a wrapped function may produce for a
/// batch of rows.
pub const MAX_OUTPUT_ELEMENTS: u128 = 100_000_000;

/// How a wrapped function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Measure {
    /// `range`/`generate_series`: (stop - start) / step.
    Series,
    /// The integer argument at this position.
    Count(usize),
    /// The first argument's length times the second argument.
    RepeatedText,
}

const WRAPPED: &[(&str, Measure)] = &[
    ("range", Measure::Series),
    ("generate_series", Measure::Series),
    ("array_repeat", Measure::Count(1)),
    ("array_resize", Measure::Count(1)),
    ("repeat", Measure::RepeatedText),
    ("lpad", Measure::Count(1)),
    ("rpad", Measure::Count(1)),
];

/// Re-registers the functions of [`WRAPPED`] that `registry` has, each wrapped in its check.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for (name, measure) in WRAPPED {
        if let Ok(inner) = registry.udf(name) {
            registry.register_udf(Arc::new(ScalarUDF::new_from_impl(BoundedOutput {
                inner,
                measure: *measure,
            })))?;
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BoundedOutput {
    inner: Arc<ScalarUDF>,
    measure: Measure,
}

/// The values of `arg` as Int64 (one per row), or `None` when it is not an integer argument.
fn integers(arg: &ColumnarValue, rows: usize) -> Option<ArrayRef> {
    let array = arg.to_array(rows).ok()?;
    array
        .data_type()
        .is_integer()
        .then(|| cast(&array, &DataType::Int64).ok())
        .flatten()
}

/// A temporal argument as nanoseconds (dates and timestamps), one per row.
fn nanoseconds(arg: &ColumnarValue, rows: usize) -> Option<Vec<Option<i128>>> {
    let array = arg.to_array(rows).ok()?;
    let per_unit: i128 = match array.data_type() {
        DataType::Date32 => 86_400_000_000_000,
        DataType::Date64 | DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
        t if t.is_integer() => 1,
        _ => return None,
    };
    let values = cast(&array, &DataType::Int64).ok()?;
    let values = values.as_primitive::<Int64Type>();
    Some(
        (0..rows)
            .map(|i| {
                values
                    .is_valid(i)
                    .then(|| values.value(i) as i128 * per_unit)
            })
            .collect(),
    )
}

/// A step argument: integers as they are, intervals as (at least) nanoseconds; months count
/// as 28 days, the shortest, so the estimate errs towards more elements.
fn steps(arg: &ColumnarValue, rows: usize) -> Option<Vec<Option<i128>>> {
    let array = arg.to_array(rows).ok()?;
    let day: i128 = 86_400_000_000_000;
    match array.data_type() {
        t if t.is_integer() => {
            let values = cast(&array, &DataType::Int64).ok()?;
            let values = values.as_primitive::<Int64Type>();
            Some(
                (0..rows)
                    .map(|i| values.is_valid(i).then(|| values.value(i) as i128))
                    .collect(),
            )
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let values = array.as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>();
            Some(
                (0..rows)
                    .map(|i| {
                        values.is_valid(i).then(|| {
                            let v = values.value(i);
                            v.months as i128 * 28 * day
                                + v.days as i128 * day
                                + v.nanoseconds as i128
                        })
                    })
                    .collect(),
            )
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let values = array.as_primitive::<arrow::datatypes::IntervalDayTimeType>();
            Some(
                (0..rows)
                    .map(|i| {
                        values.is_valid(i).then(|| {
                            let v = values.value(i);
                            v.days as i128 * day + v.milliseconds as i128 * 1_000_000
                        })
                    })
                    .collect(),
            )
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            let values = array.as_primitive::<arrow::datatypes::IntervalYearMonthType>();
            Some(
                (0..rows)
                    .map(|i| {
                        values
                            .is_valid(i)
                            .then(|| values.value(i) as i128 * 28 * day)
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Elements `range`/`generate_series` would produce for all rows (`None`: not measurable, which
/// leaves the check to the wrapped function's own errors).
fn series_elements(args: &[ColumnarValue], rows: usize) -> Option<u128> {
    let (start, stop, step) = match args {
        [stop] => (None, nanoseconds(stop, rows)?, None),
        [start, stop] => (
            Some(nanoseconds(start, rows)?),
            nanoseconds(stop, rows)?,
            None,
        ),
        [start, stop, step] => (
            Some(nanoseconds(start, rows)?),
            nanoseconds(stop, rows)?,
            Some(steps(step, rows)?),
        ),
        _ => return None,
    };
    let mut total = 0u128;
    for row in 0..rows {
        let Some(stop) = stop[row] else { continue };
        let start = match &start {
            Some(s) => match s[row] {
                Some(v) => v,
                None => continue,
            },
            None => 0,
        };
        let step = match &step {
            Some(s) => match s[row] {
                Some(v) => v.unsigned_abs().max(1),
                None => continue,
            },
            // A temporal series has no default step; integers step by one.
            None => 1,
        };
        total = total.saturating_add((stop - start).unsigned_abs() / step + 1);
    }
    Some(total)
}

fn measure(measure: Measure, args: &[ColumnarValue], rows: usize) -> Option<u128> {
    let positive = |array: &ArrayRef, row: usize| -> u128 {
        let values = array.as_primitive::<Int64Type>();
        if values.is_valid(row) {
            values.value(row).max(0) as u128
        } else {
            0
        }
    };
    match measure {
        Measure::Series => series_elements(args, rows),
        Measure::Count(at) => {
            let counts = integers(args.get(at)?, rows)?;
            Some((0..rows).map(|row| positive(&counts, row)).sum())
        }
        Measure::RepeatedText => {
            let text = args.first()?.to_array(rows).ok()?;
            let text = cast(&text, &DataType::Utf8).ok()?;
            let text = text.as_string::<i32>();
            let counts = integers(args.get(1)?, rows)?;
            Some(
                (0..rows)
                    .map(|row| {
                        let length = if text.is_valid(row) {
                            text.value(row).len()
                        } else {
                            0
                        };
                        (length as u128).saturating_mul(positive(&counts, row))
                    })
                    .sum(),
            )
        }
    }
}

impl ScalarUDFImpl for BoundedOutput {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(elements) = measure(self.measure, &args.args, args.number_rows)
            && elements > MAX_OUTPUT_ELEMENTS
        {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would produce {elements} elements for this batch, more than \
                 {MAX_OUTPUT_ELEMENTS}: use the table function form (SELECT * FROM \
                 range(...)), which streams, or smaller arguments",
                self.inner.name()
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    async fn run(sql: &str) -> Result<usize, String> {
        let mut state = SessionContext::new().state();
        super::register(&mut state).unwrap();
        let ctx = SessionContext::new_with_state(state);
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        let batches = df.collect().await.map_err(|e| e.to_string())?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn oversized_outputs_are_refused_and_ordinary_ones_run() {
        for sql in [
            "SELECT range(0, 5000000000)",
            "SELECT range(5000000000)",
            "SELECT generate_series(1, 200000000, 1)",
            "SELECT range(TIMESTAMP '2020-01-01', TIMESTAMP '2030-01-01', INTERVAL '1 second')",
            "SELECT array_repeat(1, 1000000000)",
            "SELECT array_resize([1], 1000000000)",
            "SELECT repeat('abc', 1000000000)",
            "SELECT lpad('x', 1000000000)",
            "SELECT rpad('x', 1000000000, 'y')",
            "SELECT array_repeat(1, v) FROM (VALUES (60000000), (60000000)) AS t(v)",
        ] {
            let err = run(sql).await.unwrap_err();
            assert!(err.contains("elements"), "{sql}: {err}");
        }
        for sql in [
            "SELECT range(0, 1000)",
            "SELECT generate_series(DATE '2026-01-01', DATE '2026-12-31', INTERVAL '1 day')",
            "SELECT array_repeat('a', 3), repeat('ab', 3), lpad('x', 5), rpad('x', 5, '-')",
            "SELECT count(*) FROM range(20000000)",
        ] {
            assert_eq!(run(sql).await.unwrap(), 1, "{sql}");
        }
    }
}

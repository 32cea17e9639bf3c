//! `utc_date(ts) -> Date`: the UTC calendar date of a timestamp, and a rewrite that lets
//! `CAST(ts AS DATE)` use it.
//!
//! Day buckets (`CAST(ts AS DATE) = DATE '2026-09-01'`, `GROUP BY CAST(ts AS DATE)`) are the most
//! common expression in behavioural queries. Arrow's cast converts every value through a
//! calendar library and a time-zone lookup, even when the zone is UTC; for UTC (or no zone) the
//! date is a floor division, several times cheaper. [`UtcDateCast`] rewrites such casts to
//! `utc_date` during analysis; results, column names and errors stay those of the cast.
//!
//! ```sql
//! SELECT utc_date(ts) AS day, count(DISTINCT user_id) FROM events GROUP BY day;
//! ```
//!
//! `utc_date` of a timestamp in another zone is still its UTC date (unlike a cast, which uses
//! the local date of that zone).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ExprSchema, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(UtcDate::new()))]
}

/// Days either side of 1970-01-01 that the calendar library behind Arrow's cast can represent
/// (about ±262,000 years), kept a little inside its bound. Beyond it the cast reports an error,
/// so the kernel hands such arrays to the cast to report the same error.
const CALENDAR_DAYS: i64 = 95_000_000;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDate {
    signature: Signature,
}

impl UtcDate {
    pub fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for UtcDate {
    fn default() -> Self {
        Self::new()
    }
}

const SECONDS_PER_DAY: i64 = 86_400;

/// UTC dates of timestamps (any unit and zone), NULL stays NULL.
pub fn utc_dates(timestamps: &dyn Array) -> Result<ArrayRef> {
    let DataType::Timestamp(unit, _) = timestamps.data_type() else {
        return plan_err!(
            "utc_date expects a timestamp, got {}",
            timestamps.data_type()
        );
    };
    let Some(days) = by_unit(timestamps, *unit, Days) else {
        // Some value lies outside the calendar; the cast reports it unless it is under a NULL.
        return Ok(arrow::compute::cast(timestamps, &DataType::Date32)?);
    };
    let days = Date32Array::new(days, timestamps.nulls().cloned());
    Ok(Arc::new(days))
}

/// Per timestamp, bit `i` set when its UTC date is `days[i]`, i.e. `utc_date(ts) = days[i]`,
/// without a column of dates: one pass that finds each timestamp's offset in days from the
/// first asked day and looks its bits up. Values under NULL slots are looked up too; the caller
/// clears those rows. `None` if some value lies outside the calendar (its date is then an
/// error, or NULL, which only [`utc_dates`] reports faithfully), or if the days span more
/// than [`MAX_DAY_SPAN`] or start beyond the unit's range: the caller then goes through dates.
pub fn utc_day_masks(timestamps: &dyn Array, days: &[i32]) -> Option<Vec<u32>> {
    let DataType::Timestamp(unit, _) = timestamps.data_type() else {
        return None;
    };
    by_unit(timestamps, *unit, DayMasks(days))
}

/// Work on a timestamp column's raw values, given the length of a day in their unit as a
/// constant: a floor division by a constant compiles to a multiplication, a division by a
/// runtime value to a far slower `idiv` per row.
trait PerDay {
    type Output;
    fn apply<const PER_DAY: i64>(self, values: &[i64]) -> Self::Output;
}

fn by_unit<W: PerDay>(timestamps: &dyn Array, unit: TimeUnit, work: W) -> W::Output {
    match unit {
        TimeUnit::Second => {
            work.apply::<SECONDS_PER_DAY>(timestamps.as_primitive::<TimestampSecondType>().values())
        }
        TimeUnit::Millisecond => work.apply::<{ SECONDS_PER_DAY * 1_000 }>(
            timestamps
                .as_primitive::<TimestampMillisecondType>()
                .values(),
        ),
        TimeUnit::Microsecond => work.apply::<{ SECONDS_PER_DAY * 1_000_000 }>(
            timestamps
                .as_primitive::<TimestampMicrosecondType>()
                .values(),
        ),
        TimeUnit::Nanosecond => work.apply::<{ SECONDS_PER_DAY * 1_000_000_000 }>(
            timestamps
                .as_primitive::<TimestampNanosecondType>()
                .values(),
        ),
    }
}

/// The dates of [`utc_dates`].
struct Days;

impl PerDay for Days {
    type Output = Option<ScalarBuffer<i32>>;
    fn apply<const PER_DAY: i64>(self, values: &[i64]) -> Self::Output {
        days_of::<PER_DAY>(values)
    }
}

/// The condition bits of [`utc_day_masks`], for these days.
struct DayMasks<'a>(&'a [i32]);

impl PerDay for DayMasks<'_> {
    type Output = Option<Vec<u32>>;
    fn apply<const PER_DAY: i64>(self, values: &[i64]) -> Self::Output {
        day_masks::<PER_DAY>(values, self.0)
    }
}

/// Widest range of asked days, first to last, that [`utc_day_masks`] looks up in a table.
pub const MAX_DAY_SPAN: i64 = 4096;

fn day_masks<const PER_DAY: i64>(values: &[i64], days: &[i32]) -> Option<Vec<u32>> {
    let (low, high) = values.iter().fold((i64::MAX, i64::MIN), |(low, high), &v| {
        (low.min(v), high.max(v))
    });
    let outside = |v: i64| v.div_euclid(PER_DAY).abs() > CALENDAR_DAYS;
    if !values.is_empty() && (outside(low) || outside(high)) {
        return None;
    }
    let first_day = i64::from(*days.iter().min()?);
    let span = i64::from(*days.iter().max()?) - first_day + 1;
    let origin = i64::try_from(i128::from(first_day) * i128::from(PER_DAY)).ok()?;
    if span > MAX_DAY_SPAN {
        return None;
    }
    let mut table = vec![0u32; span as usize];
    for (bit, &day) in days.iter().enumerate() {
        table[(i64::from(day) - first_day) as usize] |= 1 << bit;
    }
    Some(
        values
            .iter()
            .map(|&value| {
                // Days before the origin map past the table; the subtraction cannot wrap into
                // it because it is taken only from values at or after the origin.
                let offset = if value >= origin {
                    value.wrapping_sub(origin) as u64 / PER_DAY as u64
                } else {
                    u64::MAX
                };
                usize::try_from(offset)
                    .ok()
                    .and_then(|offset| table.get(offset))
                    .copied()
                    .unwrap_or(0)
            })
            .collect(),
    )
}

/// The day of every value, or `None` if any value (NULL slots included) lies outside the
/// calendar. The range check is folded into one flag so the loop stays branch-free.
fn days_of<const PER_DAY: i64>(values: &[i64]) -> Option<ScalarBuffer<i32>> {
    let mut outside = false;
    let days: Vec<i32> = values
        .iter()
        .map(|&t| {
            let day = t.div_euclid(PER_DAY);
            outside |= day.abs() > CALENDAR_DAYS;
            // Narrowing is exact for every day kept; arrays with a wider day are discarded.
            day as i32
        })
        .collect();
    (!outside).then(|| days.into())
}

impl ScalarUDFImpl for UtcDate {
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        crate::catalog::documentation(self.name())
    }

    fn name(&self) -> &str {
        "utc_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[0] {
            DataType::Timestamp(_, _) | DataType::Null => Ok(DataType::Date32),
            other => plan_err!("utc_date expects a timestamp, got {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("utc_date takes one argument");
        };
        match arg {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(utc_dates(array)?)),
            ColumnarValue::Scalar(scalar) if scalar.is_null() => Ok(ColumnarValue::Scalar(
                datafusion::scalar::ScalarValue::Date32(None),
            )),
            ColumnarValue::Scalar(scalar) => {
                let dates = utc_dates(&scalar.to_array()?)?;
                Ok(ColumnarValue::Scalar(
                    datafusion::scalar::ScalarValue::try_from_array(&dates, 0)?,
                ))
            }
        }
    }
}

/// Zone names whose local date is the UTC date.
fn is_utc(zone: Option<&str>) -> bool {
    zone.is_none_or(|z| {
        matches!(
            z.to_ascii_uppercase().as_str(),
            "UTC" | "Z" | "+00:00" | "+0000" | "+00" | "ETC/UTC" | "GMT" | "ETC/GMT"
        )
    })
}

/// Rewrites `CAST(ts AS DATE)` and `TRY_CAST(ts AS DATE)` of a UTC (or zone-less) timestamp to
/// `utc_date(ts)`, which computes the same dates faster.
#[derive(Debug, Default)]
pub struct UtcDateCast;

impl FunctionRewrite for UtcDateCast {
    fn name(&self) -> &str {
        "utc_date_cast"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        let (inner, target) = match &expr {
            Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                (expr, field.data_type())
            }
            _ => return Ok(Transformed::no(expr)),
        };
        if *target != DataType::Date32 {
            return Ok(Transformed::no(expr));
        }
        // An expression whose type cannot be resolved here is left for the planner to report.
        let utc_timestamp = match inner.get_type(schema as &dyn ExprSchema) {
            Ok(DataType::Timestamp(_, zone)) => is_utc(zone.as_deref()),
            _ => false,
        };
        if !utc_timestamp {
            return Ok(Transformed::no(expr));
        }
        let (Expr::Cast(Cast { expr: inner, .. }) | Expr::TryCast(TryCast { expr: inner, .. })) =
            expr
        else {
            unreachable!("matched above")
        };
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(ScalarUDF::from(UtcDate::new())), vec![*inner]),
        )))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampSecondArray;

    use super::*;

    /// Same dates as Arrow's cast, including before 1970 and at day boundaries.
    #[test]
    fn matches_arrow_cast() {
        // Each unit has its own division; day boundaries on both sides of the epoch.
        for (per_second, unit) in [
            (1, TimeUnit::Second),
            (1_000, TimeUnit::Millisecond),
            (1_000_000, TimeUnit::Microsecond),
            (1_000_000_000, TimeUnit::Nanosecond),
        ] {
            let day = 86_400 * per_second;
            let raw: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![
                Some(0),
                Some(-1),
                Some(day - 1),
                Some(day),
                Some(-day),
                Some(-day - 1),
                None,
                Some(1_788_000_000 * per_second + 17),
            ]));
            for zone in [None, Some("UTC"), Some("+00:00")] {
                let timestamps =
                    arrow::compute::cast(&raw, &DataType::Timestamp(unit, zone.map(Into::into)))
                        .unwrap();
                let expected = arrow::compute::cast(&timestamps, &DataType::Date32).unwrap();
                assert_eq!(
                    utc_dates(&timestamps).unwrap().as_ref(),
                    expected.as_ref(),
                    "{unit:?} {zone:?}"
                );
            }
        }
    }

    async fn plan_of(sql: &str) -> String {
        let state = crate::session_state(
            datafusion::execution::SessionStateBuilder::new().with_default_features(),
        )
        .unwrap();
        let ctx = datafusion::prelude::SessionContext::new_with_state(state);
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        plan.display_indent().to_string()
    }

    #[tokio::test]
    async fn casts_of_utc_timestamps_run_as_utc_date_under_the_casts_name() {
        let utc = "SELECT CAST(ts AS DATE) FROM (VALUES (arrow_cast(TIMESTAMP '2026-09-01T12:00:00', \
                   'Timestamp(Microsecond, Some(\"UTC\"))'))) AS t(ts)";
        let plan = plan_of(utc).await;
        assert!(plan.contains("utc_date(t.ts) AS t.ts"), "{plan}");

        let taipei = utc.replace("UTC", "Asia/Taipei");
        let plan = plan_of(&taipei).await;
        assert!(!plan.contains("utc_date"), "{plan}");
    }

    #[test]
    fn out_of_calendar_values_under_nulls_stay_null() {
        let array = TimestampSecondArray::from(vec![Some(86_400), None])
            .into_data()
            .into_builder()
            .buffers(vec![arrow::buffer::Buffer::from_slice_ref([
                86_400_i64,
                i64::MAX,
            ])])
            .build()
            .map(TimestampSecondArray::from)
            .unwrap();
        let days = utc_dates(&array).unwrap();
        assert_eq!(
            days.as_primitive::<arrow::datatypes::Date32Type>().value(0),
            1
        );
        assert!(days.is_null(1));
    }

    #[test]
    fn out_of_calendar_range_reports_the_cast_error() {
        let array = TimestampSecondArray::from(vec![i64::MAX]);
        assert!(utc_dates(&array).is_err());
    }
}

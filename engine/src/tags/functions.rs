//! The SQL side of tags.
//!
//! | function | result |
//! |---|---|
//! | `tag_bitmap('name')` | bitmap of the users having the tag (any value of a valued tag) |
//! | `tag_bitmap('name', 'value')` | bitmap of the users having that value |
//! | `audience_bitmap('expr' [, as_of])` | bitmap of the users a tag expression selects, now or at `as_of` |
//! | `audience('expr' [, as_of])` table function | `user_id`, `user_key` of those users |
//! | `has_tag(user_key, 'name' [, 'value'])` | whether the row's user has the tag (value); NULL key -> NULL |
//!
//! Tag expressions are described in `cohort_sql_extensions::bitmap::expression`:
//! `(high_spender | vip) & country:tw - churned`. `as_of` is a timestamp or date-time string:
//! the tags as the last refresh committed at or before then left them (Delta time travel).
//!
//! ```sql
//! SELECT count(*) FROM audience('vip & lifecycle:active - churned');
//! SELECT bitmap_cardinality(audience_bitmap('vip', TIMESTAMP '2026-11-16'));
//! SELECT event, count(*) FROM events WHERE has_tag(user_key, 'vip') GROUP BY event;
//! ```
//!
//! Arguments other than `user_key` must be constants: the bitmaps are read before the statement
//! is planned, and the functions fold into constant bitmaps.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::datatypes::DataType;
use cohort_sql_extensions::bitmap::RoaringTreemap;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use cohort_sql_extensions::bitmap::expression::TagExpr;
use cohort_sql_extensions::bitmap::{encode, id_rows};

use super::resolve::{AsOf, ResolvedTags, scalar_as_of};
use super::{AUDIENCE_BITMAP, HAS_TAG, TAG_BITMAP};
use crate::function_args::{UsersOfBitmap, constant_string, engine_error, table_argument};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    TagBitmap,
    AudienceBitmap,
    HasTag,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::TagBitmap => TAG_BITMAP,
            Kind::AudienceBitmap => AUDIENCE_BITMAP,
            Kind::HasTag => HAS_TAG,
        }
    }

    /// Allowed argument counts.
    fn arity(self) -> (usize, usize) {
        match self {
            Kind::TagBitmap | Kind::AudienceBitmap => (1, 2),
            Kind::HasTag => (2, 3),
        }
    }
}

/// The scalar tag functions over the bitmaps resolved for one statement.
pub fn scalar_functions(tags: &Arc<ResolvedTags>) -> Vec<ScalarUDF> {
    [Kind::TagBitmap, Kind::AudienceBitmap, Kind::HasTag]
        .into_iter()
        .map(|kind| {
            ScalarUDF::from(TagFunction {
                kind,
                tags: Arc::clone(tags),
                signature: Signature::variadic_any(Volatility::Immutable),
            })
        })
        .collect()
}

#[derive(Debug)]
struct TagFunction {
    kind: Kind,
    tags: Arc<ResolvedTags>,
    signature: Signature,
}

impl PartialEq for TagFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && Arc::ptr_eq(&self.tags, &other.tags)
    }
}

impl Eq for TagFunction {}

impl Hash for TagFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        Arc::as_ptr(&self.tags).hash(state);
    }
}

fn as_of_argument(function: &str, arg: Option<&ColumnarValue>) -> Result<AsOf> {
    match arg {
        None => Ok(None),
        Some(ColumnarValue::Scalar(value)) => scalar_as_of(value).map(Some).map_err(engine_error),
        Some(ColumnarValue::Array(_)) => {
            plan_err!("{function}: the point in time must be a constant")
        }
    }
}

impl TagFunction {
    fn bitmap(&self, args: &[ColumnarValue]) -> Result<RoaringTreemap> {
        let name = self.kind.name();
        match self.kind {
            Kind::TagBitmap | Kind::HasTag => {
                let offset = usize::from(self.kind == Kind::HasTag);
                let Some(tag) = constant_string(name, offset + 1, &args[offset])? else {
                    return plan_err!("{name}: the tag name is NULL");
                };
                let value = match args.get(offset + 1) {
                    Some(arg) => constant_string(name, offset + 2, arg)?,
                    None => None,
                };
                self.tags
                    .users(None, &tag, value.as_deref())
                    .map_err(engine_error)
            }
            Kind::AudienceBitmap => {
                let Some(text) = constant_string(name, 1, &args[0])? else {
                    return plan_err!("{name}: the tag expression is NULL");
                };
                let expression = TagExpr::parse(&text)?;
                let as_of = as_of_argument(name, args.get(1))?;
                self.tags.evaluate(as_of, &expression).map_err(engine_error)
            }
        }
    }
}

impl ScalarUDFImpl for TagFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let (min, max) = self.kind.arity();
        if arg_types.len() < min || arg_types.len() > max {
            return plan_err!(
                "{} takes {min} to {max} arguments, got {}",
                self.kind.name(),
                arg_types.len()
            );
        }
        Ok(match self.kind {
            Kind::HasTag => DataType::Boolean,
            _ => DataType::Binary,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bitmap = self.bitmap(&args.args)?;
        match self.kind {
            Kind::HasTag => {
                let keys: ArrayRef = args.args[0].to_array(args.number_rows)?;
                let contained: BooleanArray = id_rows(HAS_TAG, &keys)?
                    .into_iter()
                    .map(|key| key.map(|key| bitmap.contains(key)))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(contained)))
            }
            _ => Ok(ColumnarValue::Scalar(ScalarValue::Binary(Some(encode(
                &bitmap,
            ))))),
        }
    }
}

/// `audience('expr' [, as_of])`: the selected users, from the user-key dictionary.
#[derive(Debug)]
pub struct AudienceFunction {
    pub tags: Arc<ResolvedTags>,
    pub users: UsersOfBitmap,
}

impl TableFunctionImpl for AudienceFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "audience takes a tag expression and optionally a point in time, got {} arguments",
                exprs.len()
            );
        }
        let constants = exprs
            .iter()
            .map(|e| {
                table_argument(e).ok_or_else(|| {
                    DataFusionError::Plan(format!("audience: {e} is not a constant"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(text) = constant_string("audience", 1, &constants[0])? else {
            return exec_err!("audience: the tag expression is NULL");
        };
        let expression = TagExpr::parse(&text)?;
        let as_of = as_of_argument("audience", constants.get(1))?;
        let bitmap = self
            .tags
            .evaluate(as_of, &expression)
            .map_err(engine_error)?;
        let plan = self.users.plan(&bitmap, vec![])?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// Most audiences one `audience_overlap` compares (1,128 pairs).
const MAX_OVERLAP_AUDIENCES: usize = 48;

/// `audience_overlap('a', 'b', ...)`: for every pair of audience expressions, in the order
/// given, `a, b, both, a_only, b_only, jaccard` (both over the union; NULL when both are empty).
#[derive(Debug)]
pub struct AudienceOverlapFunction {
    pub tags: Arc<ResolvedTags>,
}

impl TableFunctionImpl for AudienceOverlapFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
        use arrow::datatypes::{Field, Schema};
        const NAME: &str = super::AUDIENCE_OVERLAP;
        let exprs = args.exprs();
        if exprs.len() < 2 || exprs.len() > MAX_OVERLAP_AUDIENCES {
            return plan_err!(
                "{NAME} takes 2 to {MAX_OVERLAP_AUDIENCES} audience expressions, got {}",
                exprs.len()
            );
        }
        let mut audiences = Vec::with_capacity(exprs.len());
        for (i, expr) in exprs.iter().enumerate() {
            let constant = table_argument(expr).ok_or_else(|| {
                DataFusionError::Plan(format!("{NAME}: {expr} is not a constant"))
            })?;
            let Some(text) = constant_string(NAME, i + 1, &constant)? else {
                return plan_err!("{NAME}: audience expression {} is NULL", i + 1);
            };
            let users = self
                .tags
                .evaluate(None, &TagExpr::parse(&text)?)
                .map_err(engine_error)?;
            audiences.push((text, users));
        }
        let (mut a, mut b, mut both, mut a_only, mut b_only, mut jaccard) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (i, (a_text, a_users)) in audiences.iter().enumerate() {
            for (b_text, b_users) in &audiences[i + 1..] {
                let shared = a_users.intersection_len(b_users);
                let union = a_users.len() + b_users.len() - shared;
                a.push(a_text.as_str());
                b.push(b_text.as_str());
                both.push(shared as i64);
                a_only.push((a_users.len() - shared) as i64);
                b_only.push((b_users.len() - shared) as i64);
                jaccard.push((union > 0).then(|| shared as f64 / union as f64));
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Utf8, false),
            Field::new("both", DataType::Int64, false),
            Field::new("a_only", DataType::Int64, false),
            Field::new("b_only", DataType::Int64, false),
            Field::new("jaccard", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(a)),
                Arc::new(StringArray::from(b)),
                Arc::new(Int64Array::from(both)),
                Arc::new(Int64Array::from(a_only)),
                Arc::new(Int64Array::from(b_only)),
                Arc::new(Float64Array::from(jaccard)),
            ],
        )?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?))
    }
}

//! `pg_catalog`'s tables as `datafusion-pg-catalog` builds them from the query session's
//! catalogs, with what clients read that it lacks.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::{Column, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::datasource::{TableType, provider_as_source};
use datafusion::functions::string::btrim;
use datafusion::functions_nested::string::string_to_array_udf;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast, col, lit, when};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;

/// The catalogs of the latest query session that installed `pg_catalog`: every session has the
/// same tables, so the shared catalog provider may describe any of them.
#[derive(Debug, Clone, Default)]
pub(super) struct LatestCatalogs {
    inner: Arc<RwLock<Option<Arc<dyn CatalogProviderList>>>>,
}

impl LatestCatalogs {
    pub(super) fn set(&self, catalogs: Arc<dyn CatalogProviderList>) {
        *self.inner.write().expect("catalogs lock") = Some(catalogs);
    }

    fn get(&self) -> DfResult<Arc<dyn CatalogProviderList>> {
        self.inner
            .read()
            .expect("catalogs lock")
            .clone()
            .ok_or_else(|| DataFusionError::Internal("pg_catalog read before any session".into()))
    }
}

#[async_trait]
impl CatalogInfo for LatestCatalogs {
    async fn catalog_names(&self) -> DfResult<Vec<String>> {
        let mut names = CatalogInfo::catalog_names(&self.get()?).await?;
        names.sort();
        Ok(names)
    }

    async fn schema_names(&self, catalog: &str) -> DfResult<Option<Vec<String>>> {
        let names = CatalogInfo::schema_names(&self.get()?, catalog).await?;
        Ok(names.map(|mut names| {
            names.sort();
            names
        }))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> DfResult<Option<Vec<String>>> {
        let names = CatalogInfo::table_names(&self.get()?, catalog, schema).await?;
        Ok(names.map(|mut names| {
            names.sort();
            names
        }))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> DfResult<Option<SchemaRef>> {
        CatalogInfo::table_schema(&self.get()?, catalog, schema, table).await
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> DfResult<Option<TableType>> {
        CatalogInfo::table_type(&self.get()?, catalog, schema, table).await
    }
}

/// `pg_catalog` with the columns clients read in the shape they expect: `pg_class` gains
/// `reloptions` and `relacl` (NULL: Cohort's tables have no storage options or ACLs; psql's
/// `\d+` reads the options), `pg_index.indkey` and `pg_constraint.conkey`/`confkey` are
/// `int2[]` as in PostgreSQL (SQLAlchemy unnests them; the crate keeps them as text), and
/// `pg_database.datlocprovider` is PostgreSQL's one-letter code (`c`, shown by `\l` as libc).
#[derive(Debug)]
pub(super) struct PgCatalogTables {
    inner: Arc<dyn SchemaProvider>,
}

impl PgCatalogTables {
    pub(super) fn new(inner: Arc<dyn SchemaProvider>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogTables {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        let (added, replaced): (Vec<(&str, Expr)>, Vec<(&str, Expr)>) = match name.as_str() {
            "pg_class" => (
                vec![
                    ("reloptions", null_text_array()),
                    ("relacl", null_text_array()),
                ],
                vec![("relam", heap_for_tables(&table.schema())?)],
            ),
            "pg_index" => (
                vec![],
                vec![
                    ("indkey", number_array("indkey", " ", DataType::Int16)),
                    ("indoption", number_array("indoption", " ", DataType::Int16)),
                    ("indclass", number_array("indclass", " ", DataType::Int32)),
                    (
                        "indcollation",
                        number_array("indcollation", " ", DataType::Int32),
                    ),
                ],
            ),
            "pg_constraint" => (
                vec![],
                vec![
                    ("conkey", number_array("conkey", ", ", DataType::Int16)),
                    ("confkey", number_array("confkey", ", ", DataType::Int16)),
                ],
            ),
            "pg_database" => (vec![], vec![("datlocprovider", lit("c"))]),
            _ => return Ok(Some(table)),
        };
        let schema = table.schema();
        let mut columns: Vec<Expr> = schema
            .fields()
            .iter()
            .map(
                |field| match replaced.iter().find(|(column, _)| column == field.name()) {
                    Some((column, expr)) => expr.clone().alias(*column),
                    None => col(Column::from_name(field.name())),
                },
            )
            .collect();
        columns.extend(added.into_iter().map(|(column, expr)| expr.alias(column)));
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)?
            .project(columns)?
            .build()?;
        Ok(Some(Arc::new(ViewTable::new(plan, None))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

fn null_text_array() -> Expr {
    cast(
        lit(ScalarValue::Null),
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
    )
}

/// A text column holding integers separated by `separator` (PostgreSQL's int2vector and
/// oidvector output `1 2`, or an Arrow list's `[1, 2]`) as an array of `element`.
fn number_array(column: &str, separator: &str, element: DataType) -> Expr {
    let digits = btrim().call(vec![col(Column::from_name(column)), lit("[]")]);
    let elements = string_to_array_udf().call(vec![digits, lit(separator)]);
    cast(
        elements,
        DataType::List(Arc::new(Field::new_list_field(element, true))),
    )
}

/// `relam` with Cohort's tables in PostgreSQL's `heap` access method (oid 2), which psql's
/// `\d+` names; the crate leaves it 0 for them.
fn heap_for_tables(schema: &SchemaRef) -> DfResult<Expr> {
    let relam = schema.field_with_name("relam")?.data_type().clone();
    let relam_column = || col(Column::from_name("relam"));
    when(
        col(Column::from_name("relkind"))
            .eq(lit("r"))
            .and(relam_column().eq(cast(lit(0), relam.clone()))),
        cast(lit(2), relam),
    )
    .otherwise(relam_column())
}

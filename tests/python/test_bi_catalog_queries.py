"""The catalog queries BI tools send when they connect and browse, replayed against Cohort and
against a real PostgreSQL 15 holding the same tables (the `both` fixture). Each must plan and
answer on Cohort through the extended protocol (JDBC, psycopg) and the simple one (psycopg2,
Grafana's pgx in simple mode); where the answer is about the user's tables rather than about
PostgreSQL's own system catalog, it must be the reference server's answer.

Sources: Grafana's PostgreSQL data source (public/app/plugins/datasource/
grafana-postgresql-datasource/postgresMetaQuery.ts: version, TimescaleDB check, schemas,
tables, columns); Metabase's PostgreSQL driver on sync (schemas, table privileges, tables with
descriptions and row estimates, session settings); DBeaver's PostgreSQL plugin on connect
(current schema and user, namespaces, type lookups, database, keyword list, version)."""

import psycopg
import pytest

from test_postgres_reference import both  # noqa: F401  (the fixture)

GRAFANA_SCHEMA = """
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"""

TIMESCALE = """('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')"""

# (tool, what it asks, SQL, whether the rows must equal the reference server's)
QUERIES = [
    ("grafana", "version", "SELECT current_setting('server_version_num')::int/100 as version", True),
    ("grafana", "timescaledb", "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", True),
    ("grafana", "schemas", """SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema',
                              'pg_catalog',
                              'pg_toast',
                              '_timescaledb_cache',
                              '_timescaledb_catalog',
                              '_timescaledb_internal',
                              '_timescaledb_config',
                              'timescaledb_information',
                              'timescaledb_experimental')
    ORDER BY schema_name""", True),
    ("grafana", "tables in schema", """SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = 'public'
      ORDER BY 1""", True),
    ("grafana", "tables on the search path", f"""SELECT
    CASE WHEN {GRAFANA_SCHEMA}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN {TIMESCALE}
    ORDER BY CASE WHEN {GRAFANA_SCHEMA} THEN 0 ELSE 1 END, 1""", True),
    ("grafana", "columns", f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('events'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('events'))[1]
          AND quote_ident(table_name) = (parse_ident('events'))[2]
        ELSE quote_ident(table_name) = 'events'
          AND {GRAFANA_SCHEMA}
      END""", True),
    ("metabase", "session", "SET extra_float_digits = 2", False),
    ("metabase", "session", "SET application_name = 'Metabase v0.55.1 [f8f63fdf-d8f8-4573-86ea-4fe4a9548041]'", False),
    ("metabase", "isolation", "SHOW TRANSACTION ISOLATION LEVEL", True),
    ("metabase", "isolation", "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED", False),
    ("metabase", "schemas", """SELECT nspname AS "TABLE_SCHEM", current_database() AS "TABLE_CATALOG" FROM pg_catalog.pg_namespace  WHERE nspname <> 'pg_toast' AND (nspname !~ '^pg_temp_'  OR nspname = (pg_catalog.current_schemas(true))[1]) AND (nspname !~ '^pg_toast_temp_'  OR nspname = replace((pg_catalog.current_schemas(true))[1], 'pg_temp_', 'pg_toast_temp_'))  ORDER BY "TABLE_SCHEM" """, False),
    ("metabase", "table privileges", """with table_privileges as (
         select
           NULL as role,
           t.schemaname as schema,
           t.objectname as table,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'update') as update,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'select') as select,
           pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'insert') as insert,
           pg_catalog.has_table_privilege(     current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'delete') as delete
         from (
           select schemaname, tablename as objectname from pg_catalog.pg_tables
           union
           select schemaname, viewname as objectname from pg_catalog.pg_views
           union
           select schemaname, matviewname as objectname from pg_catalog.pg_matviews
         ) t
         where t.schemaname !~ '^pg_'
           and t.schemaname <> 'information_schema'
           and pg_catalog.has_schema_privilege(current_user, t.schemaname, 'usage')
        )
        select t.* from table_privileges t order by t.schema, t.table""", False),
    ("metabase", "tables", """SELECT "n"."nspname" AS "schema", "c"."relname" AS "name", CASE "c"."relkind" WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS "type", "d"."description" AS "description" FROM "pg_catalog"."pg_class" AS "c" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid" LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid") AND ("d"."objsubid" = '0') AND ("d"."classoid" = 'pg_class'::regclass) WHERE ("c"."relnamespace" = "n"."oid") AND ("n"."nspname" !~ '^pg_') AND ("n"."nspname" <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm') AND ("n"."nspname" IN ('public')) ORDER BY "type" ASC, "schema" ASC, "name" ASC""", True),
    ("metabase", "timezone", "show timezone", False),
    ("dbeaver", "session", "SET extra_float_digits = 3", False),
    ("dbeaver", "session", "SET application_name = 'DBeaver 25.1.5 - Main <cohort>'", False),
    ("dbeaver", "schema", "SELECT current_schema()", True),
    ("dbeaver", "namespaces", "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname", False),
    ("dbeaver", "array type", "SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = 1009", True),
    ("dbeaver", "search path", "SHOW search_path", False),
    ("dbeaver", "database", "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='cohort'", False),
    ("dbeaver", "settings", "SELECT setting FROM pg_catalog.pg_settings where name='standard_conforming_strings'", True),
    ("dbeaver", "version", "SELECT version()", False),
    ("dbeaver", "enum probe", "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1", True),
    ("dbeaver", "reltype probe", "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1", True),
]


def reference_rows(reference, sql):
    with psycopg.connect(host=reference.host, port=reference.port, user="postgres", dbname="cohort",
                         autocommit=True) as conn:
        cursor = conn.execute(sql)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else None


@pytest.mark.parametrize("tool,asks,sql,same", QUERIES, ids=[f"{q[0]}-{q[1]}-{i}" for i, q in enumerate(QUERIES)])
def test_catalog_queries_answer(both, tool, asks, sql, same):  # noqa: F811
    cohort, reference = both
    host, port = cohort.pg_address.rsplit(":", 1)
    with psycopg.connect(host=host, port=port, user="cohort", dbname="cohort", autocommit=True,
                         connect_timeout=10) as conn:
        extended = conn.execute(sql)
        extended_rows = [tuple(row) for row in extended.fetchall()] if extended.description else None
        simple = conn.cursor().execute(sql, prepare=False)
        simple_rows = [tuple(row) for row in simple.fetchall()] if simple.description else None
    assert extended_rows == simple_rows
    if same:
        assert extended_rows == reference_rows(reference, sql)
    if asks in {"tables", "tables in schema", "tables on the search path"}:
        assert {"events", "profiles"} <= {row[0] if tool == "grafana" else row[1] for row in extended_rows}
    if tool == "grafana" and asks == "columns":
        # Grafana offers time columns by these names.
        assert ("ts", "timestamp with time zone") in extended_rows
        assert ("user_id", "bigint") in extended_rows

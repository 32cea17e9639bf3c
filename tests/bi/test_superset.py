"""Apache Superset against Cohort's PostgreSQL endpoint, end to end: Superset (pinned, its own
venv, SQLite metadata) is started for real, Cohort is added as a database through the REST
API, a dataset is created on `events`, SQL Lab runs a query, a 4-step `window_funnel` chart is
saved and its data read back through /api/v1/chart/data, and headless Chromium renders the
chart page to a screenshot that must not be blank. Run with `make test-bi`."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from conftest import Server, Store, free_port  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = os.environ.get("COHORT_SUPERSET_SCREENSHOT")

# Users reaching each step of page_view -> add_to_cart -> checkout -> purchase within an hour.
FUNNEL_SQL = """SELECT s.step, s.name, count(*) FILTER (WHERE f.level >= s.step) AS users
FROM (SELECT user_id, window_funnel(INTERVAL '1 hour', ts, event = 'page_view', event = 'add_to_cart',
                                    event = 'checkout', event = 'purchase') AS level
      FROM events GROUP BY user_id) AS f
CROSS JOIN (VALUES (1, 'page_view'), (2, 'add_to_cart'), (3, 'checkout'), (4, 'purchase')) AS s(step, name)
GROUP BY s.step, s.name"""


class Superset:
    """A Superset web server on SQLite metadata in `home`, with an admin user."""

    def __init__(self, home: Path):
        self.home = home
        config = home / "superset_config.py"
        config.write_text(
            "SECRET_KEY = 'cohort-bi-test-only-not-a-secret'\n"
            f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{home / 'superset.db'}'\n"
            # The test drives the REST API with a bearer token; the browser logs in by form.
            "WTF_CSRF_ENABLED = False\n"
            "TALISMAN_ENABLED = False\n"
            "FEATURE_FLAGS = {}\n"
        )
        self.env = {
            **os.environ,
            "SUPERSET_CONFIG_PATH": str(config),
            "FLASK_APP": "superset",
            "SUPERSET_HOME": str(home),
        }
        superset = str(Path(sys.executable).with_name("superset"))
        for args in (
            ["db", "upgrade"],
            ["fab", "create-admin", "--username", "admin", "--firstname", "Ada", "--lastname", "Admin",
             "--email", "admin@example.com", "--password", "admin"],
            ["init"],
        ):
            result = subprocess.run([superset, *args], env=self.env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"superset {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(home / "superset.log", "w")
        self.process = subprocess.Popen(
            [superset, "run", "-h", "127.0.0.1", "-p", str(self.port), "--with-threads"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.process.poll() is None, self.logs()
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        else:
            raise AssertionError(f"superset did not start:\n{self.logs()}")
        self.api = requests.Session()
        login = self.api.post(
            f"{self.url}/api/v1/security/login",
            json={"username": "admin", "password": "admin", "provider": "db", "refresh": True},
            timeout=30,
        )
        login.raise_for_status()
        self.api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    def logs(self) -> str:
        return (self.home / "superset.log").read_text()[-5000:]

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.api.request(method, f"{self.url}{path}", timeout=120, **kwargs)
        assert response.status_code in (200, 201), (
            f"{method} {path}: {response.status_code} {response.text[:2000]}\n{self.logs()}"
        )
        return response.json()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    store = Store(str(tmp_path_factory.mktemp("cohort") / "store"), env)
    store.run("demo", "--users", "300", "--events", "6000")
    server = Server(store)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def superset(tmp_path_factory):
    running = Superset(tmp_path_factory.mktemp("superset"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def database_id(cohort, superset):
    host, port = cohort.pg_address.rsplit(":", 1)
    uri = f"postgresql+psycopg2://cohort@{host}:{port}/cohort"
    tested = superset.call("POST", "/api/v1/database/test_connection/", json={"sqlalchemy_uri": uri})
    assert tested["message"] == "OK"
    created = superset.call(
        "POST", "/api/v1/database/",
        json={"database_name": "Cohort", "sqlalchemy_uri": uri, "expose_in_sqllab": True},
    )
    return created["id"]


def direct(cohort, sql):
    """`sql` run on Cohort without Superset, as psycopg2 sees it."""
    host, port = cohort.pg_address.rsplit(":", 1)
    with psycopg2.connect(host=host, port=port, user="cohort", dbname="cohort") as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_superset_lists_cohort_schemas_and_tables(superset, database_id):
    schemas = superset.call("GET", f"/api/v1/database/{database_id}/schemas/")["result"]
    assert "public" in schemas
    tables = superset.call(
        "GET", f"/api/v1/database/{database_id}/tables/", params={"q": "(schema_name:public)"}
    )["result"]
    names = {table["value"] for table in tables}
    assert {"events", "profiles"} <= names


def test_dataset_on_events_reflects_its_columns(superset, database_id):
    created = superset.call(
        "POST", "/api/v1/dataset/", json={"database": database_id, "schema": "public", "table_name": "events"}
    )
    dataset = superset.call("GET", f"/api/v1/dataset/{created['id']}")["result"]
    columns = {column["column_name"]: column for column in dataset["columns"]}
    assert {"user_id", "event", "ts", "revenue"} <= set(columns)
    assert columns["ts"]["is_dttm"], "ts must be recognised as the time column"
    assert columns["user_id"]["type"].upper() == "BIGINT"


def test_sql_lab_query_matches_cohort(cohort, superset, database_id):
    sql = "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event"
    result = superset.call(
        "POST", "/api/v1/sqllab/execute/",
        json={"database_id": database_id, "sql": sql, "schema": "public", "runAsync": False,
              "client_id": "cohortbi01", "tab": "Cohort", "queryLimit": 1000},
    )
    assert result["status"] == "success", result
    rows = [(row["event"], row["n"]) for row in result["data"]]
    assert rows == direct(cohort, sql)
    assert len(rows) >= 4


@pytest.fixture(scope="module")
def funnel_chart(superset, database_id):
    dataset = superset.call(
        "POST", "/api/v1/dataset/",
        json={"database": database_id, "schema": "public", "table_name": "purchase_funnel", "sql": FUNNEL_SQL},
    )["id"]
    metric = {"expressionType": "SQL", "sqlExpression": "SUM(users)", "label": "users"}
    form_data = {
        "datasource": f"{dataset}__table", "viz_type": "funnel", "groupby": ["name"], "metric": metric,
        "adhoc_filters": [], "row_limit": 10, "sort_by_metric": True, "show_legend": True,
        "label_type": "key_value",
    }
    query_context = {
        "datasource": {"id": dataset, "type": "table"},
        "force": True,
        "queries": [{"columns": ["name"], "metrics": [metric], "orderby": [[metric, False]], "row_limit": 10,
                     "filters": [], "extras": {}}],
        "form_data": form_data,
        "result_format": "json",
        "result_type": "full",
    }
    chart = superset.call(
        "POST", "/api/v1/chart/",
        json={"slice_name": "Purchase funnel", "viz_type": "funnel", "datasource_id": dataset,
              "datasource_type": "table", "params": json.dumps(form_data),
              "query_context": json.dumps(query_context)},
    )
    return chart["id"], query_context


def test_funnel_chart_data_is_cohorts_window_funnel(cohort, superset, funnel_chart):
    chart_id, query_context = funnel_chart
    expected = {name: users for _, name, users in direct(cohort, FUNNEL_SQL)}
    assert expected["page_view"] >= expected["add_to_cart"] >= expected["checkout"] >= expected["purchase"] > 0
    for data in (
        superset.call("POST", "/api/v1/chart/data", json=query_context),
        superset.call("GET", f"/api/v1/chart/{chart_id}/data/", params={"force": "true"}),
    ):
        [result] = data["result"]
        assert result["status"] == "success", result
        assert {row["name"]: row["users"] for row in result["data"]} == expected
        assert [row["name"] for row in result["data"]] == ["page_view", "add_to_cart", "checkout", "purchase"]


def test_funnel_chart_renders_in_chromium(superset, funnel_chart, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), "apt-get install chromium"
    chart_id, _ = funnel_chart
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.goto(f"{superset.url}/login/")
        page.fill("#username", "admin")
        page.fill("#password", "admin")
        page.click("[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
        page.goto(f"{superset.url}/superset/slice/{chart_id}/?standalone=true")
        # ECharts draws the funnel into a canvas once the data has arrived.
        canvas = page.wait_for_selector(".chart-container canvas, [class*=chart] canvas", timeout=120_000)
        page.wait_for_timeout(2000)
        png = canvas.screenshot()
        browser.close()
    path = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "funnel.png"
    path.write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert image.width > 200 and image.height > 200, image.size
    # A blank canvas is one colour; the funnel's four trapezoids and labels give many.
    assert len(colours) > 20, f"the chart looks blank ({len(colours)} colours), saved at {path}"
    background = max(colours)[0]
    assert background < 0.95 * image.width * image.height, f"the chart is almost all background: {path}"

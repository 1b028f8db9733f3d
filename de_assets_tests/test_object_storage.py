"""The lake on object storage (the production profile's `DE_ASSETS_LAKE=s3://...`), against a local S3
server (moto): the pipeline writes raw and served tables there, readers query them with DuckDB
(through s3fs, no DuckDB extension), any Iceberg engine reads them, and forget-user leaves no object
holding the user."""

import io
import socket
import subprocess
import sys
import time

import pytest

from de_assets.lib import privacy, served
from de_assets.lib.tables import CLEAN_EVENTS, RAW_EVENTS, SOURCE_FILES
from de_assets_tests.conftest import TEST_KEY, Pipeline

pytest.importorskip("s3fs", reason="the object-storage tests need s3fs (pip install -e '.[dev]')")
pytest.importorskip("moto", reason="the object-storage tests need moto's S3 server (pip install -e '.[dev]')")

BUCKET = "lake-bucket"
DAU = "SELECT event_date::VARCHAR AS d, dau FROM marts.daily_engagement ORDER BY d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_lake(monkeypatch):
    """A throwaway S3 server with an empty bucket; the AWS environment points at it. The lake URI."""
    import boto3
    import fsspec

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
            monkeypatch.setenv(name, value)
        fsspec.filesystem("s3").clear_instance_cache()  # an s3fs made for an earlier server is not reused
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}/lake"
    finally:
        server.terminate()
        server.wait(timeout=30)


def objects_with(value: str) -> list[str]:
    """Keys of the bucket's objects holding ``value``: Parquet read column by column, others byte-wise."""
    import boto3
    import pyarrow.parquet as pq

    s3 = boto3.client("s3")
    hits = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            if obj["Key"].endswith(".parquet"):
                table = pq.read_table(io.BytesIO(body))
                found = any(value in str(v) for column in table.columns for v in column.to_pylist())
            else:
                found = value.encode() in body
            if found:
                hits.append(obj["Key"])
    return hits


def test_the_pipeline_on_an_object_storage_lake_serves_and_forgets(s3_lake, tmp_path, golden_landing, monkeypatch):
    from de_assets import lake
    from de_assets_tests.conftest import record_forget_request

    pipeline = Pipeline(tmp_path, golden_landing, lake_uri=s3_lake)
    assert pipeline.run("2026-11-01", "2026-11-03").success
    assert not [p for p in tmp_path.rglob("*.parquet") if golden_landing not in p.parents]  # all in the bucket

    # the raw layer's system of record is the bucket: the warehouse reads it as a view
    assert pipeline.query("SELECT table_type FROM information_schema.tables WHERE table_schema = 'raw' "
                          "AND table_name = 'events'")["table_type"].tolist() == ["VIEW"]
    catalog = served.open_lake(str(pipeline.db), lake_uri=s3_lake, create=False)
    raw = catalog.load_table(RAW_EVENTS.name).scan(selected_fields=("user_id",)).to_arrow()  # pyiceberg, no DuckDB
    registered = pipeline.query(f"SELECT sum(rows) AS n FROM {SOURCE_FILES.name} "
                                "WHERE source = 'events' AND status <> 'redelivered'")["n"][0]
    assert raw.num_rows == registered > 0

    # readers: DuckDB over the bucket's files, the README's numbers
    monkeypatch.setenv("DE_ASSETS_DUCKDB", str(pipeline.db))
    monkeypatch.setenv("DE_ASSETS_LAKE", s3_lake)
    assert lake.query(DAU, "csv") == "d,dau\n2026-11-01,3\n2026-11-02,4\n2026-11-03,3"
    # clean.events lives in the bucket too (the warehouse's view needs the connection's filesystem): the
    # reader's count is pyiceberg's
    clean_rows = catalog.load_table(CLEAN_EVENTS.name).scan(selected_fields=("message_id",)).to_arrow().num_rows
    assert lake.query("SELECT count(*) AS n FROM clean.events", "csv") == f"n\n{clean_rows}" and clean_rows > 0

    # forget-user: gone from every object of the bucket (data, manifests, metadata)
    carol = privacy.pseudonymize(TEST_KEY, "carol")
    assert objects_with(carol)
    request_id = record_forget_request(pipeline.db, carol, TEST_KEY)
    assert pipeline.defs.resolve_job_def("forget_user_job").execute_in_process(
        instance=pipeline.instance, run_config={"ops": {"forget_user": {"config": {"request_id": request_id}}}}).success
    assert objects_with(carol) == []
    assert lake.query(f"SELECT count(*) AS n FROM clean.events WHERE user_key = '{carol}'", "csv") == "n\n0"

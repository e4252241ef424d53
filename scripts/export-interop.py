"""Checks plume's Parquet exports with pyarrow and DuckDB against PostgreSQL (run by
scripts/export-interop.sh, which starts plume and passes PLUME_URL, PLUME_TOKEN and PSQL_*).

Readings go in through the API (a site of awkward values, and a site of 150,000 readings in three
bulk requests); each export is read by both libraries, and its schema, footer metadata, row count,
sum of milligrams and every row are compared with what psql reads from the table.
"""

import csv
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

URL = os.environ["PLUME_URL"]
TOKEN = os.environ["PLUME_TOKEN"]
ROWS_PER_GROUP = 64 * 1024
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def request(method, path, body=None, content_type="application/json", key=None):
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    if key:
        headers["Idempotency-Key"] = key
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(URL + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=300) as response:
        return response.status, dict(response.headers), response.read()


def psql(sql):
    """psql's CSV output of `sql`, as rows of strings."""
    out = subprocess.run(
        ["psql", "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", f"copy ({sql}) to stdout (format csv)"],
        check=True, capture_output=True, text=True,
    ).stdout
    return list(csv.reader(io.StringIO(out)))


def stamp(at):
    return at.isoformat().replace("+00:00", "Z")


def create_site(name):
    status, _, body = request("POST", "/v1/sites", json.dumps({"name": name, "emission_limit": "1000000000"}))
    assert status == 201, body
    return json.loads(body)["data"]["id"]


def bulk(key, readings):
    lines = ["site_id,source_id,timestamp,value,unit"]
    for site, source, at, value, unit in readings:
        quoted = '"' + source.replace('"', '""') + '"'
        lines.append(f"{site},{quoted},{at},{value},{unit}")
    status, _, body = request("POST", "/v2/ingest", "\n".join(lines) + "\n", "text/csv", key)
    assert status == 201, body
    receipt = json.loads(body)["data"]
    assert receipt["readings_accepted"] == len(readings), receipt


def ingest():
    """Two sites: awkward values on the first, 150,000 readings on the second."""
    awkward, large = create_site("Interop awkward"), create_site("Interop large")
    base = NOW - datetime.timedelta(days=3)
    rows = [
        (awkward, "stack-1", stamp(base), "0", "kg"),
        (awkward, "stack-1", stamp(base + datetime.timedelta(microseconds=1)), "0.000001", "kg"),
        (awkward, 'north, "old"', stamp(base + datetime.timedelta(seconds=1, microseconds=123456)), "1000", "t"),
        (awkward, "Ölfeld α", stamp(base + datetime.timedelta(seconds=2)), "123.456789", "kg"),
        (awkward, "", stamp(base + datetime.timedelta(seconds=3)), "2300", "g"),
    ]
    bulk("interop-awkward", rows)
    for part in range(3):
        readings = []
        for n in range(part * 50_000, (part + 1) * 50_000):
            at = base - datetime.timedelta(seconds=n * 7 + 1, microseconds=(n * 7919) % 1_000_000)
            mg = (n * 104_729) % 50_000_000_000
            readings.append((large, f"sensor-{n % 13:02}", stamp(at), f"{mg // 1_000_000}.{mg % 1_000_000:06}", "kg"))
        bulk(f"interop-large-{part}", readings)
    return awkward, large


def expected(where):
    """The stored rows matching `where`, sorted, with psql's count and sum."""
    rows = psql(
        "select site_id, source_id, (extract(epoch from measured_at) * 1000000)::bigint, value_mg "
        f"from measurements where {where}"
    )
    rows = sorted((int(s), src, int(us), int(mg)) for s, src, us, mg in rows)
    (count, total), = psql(f"select count(*), coalesce(sum(value_mg), 0) from measurements where {where}")
    assert int(count) == len(rows)
    return rows, int(count), int(total)


def with_pyarrow(path):
    metadata = pq.read_metadata(path)
    table = pq.read_table(path)
    want = pa.schema([
        pa.field("site_id", pa.int64(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("measured_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("value_mg", pa.int64(), nullable=False),
    ])
    assert table.schema.remove_metadata().equals(want), table.schema
    assert metadata.metadata[b"plume.value_mg.unit"] == b"mg", metadata.metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    micros = table["measured_at"].cast(pa.int64()).to_pylist()
    rows = sorted(zip(table["site_id"].to_pylist(), table["source_id"].to_pylist(), micros,
                      table["value_mg"].to_pylist()))
    total = pc.sum(table["value_mg"]).as_py() or 0
    return rows, table.num_rows, total, groups


def with_duckdb(path):
    db = duckdb.connect()
    file = "'" + path.replace("'", "''") + "'"
    types = db.execute(f"select column_name, column_type from (describe select * from read_parquet({file}))").fetchall()
    assert types == [
        ("site_id", "BIGINT"), ("source_id", "VARCHAR"),
        ("measured_at", "TIMESTAMP WITH TIME ZONE"), ("value_mg", "BIGINT"),
    ], types
    unit = db.execute(
        f"select value::varchar from parquet_kv_metadata({file}) where key::varchar = 'plume.value_mg.unit'"
    ).fetchall()
    assert unit == [("mg",)], unit
    rows = db.execute(
        f"select site_id, source_id, epoch_us(measured_at), value_mg from read_parquet({file}) order by all"
    ).fetchall()
    count, total = db.execute(f"select count(*), coalesce(sum(value_mg), 0) from read_parquet({file})").fetchone()
    groups = db.execute(
        f"select count(distinct row_group_id) from parquet_metadata({file})"
    ).fetchone()[0]
    return sorted(rows), count, int(total), groups


def check(name, query, where, directory, row_groups):
    status, headers, body = request("GET", "/v2/export?" + query)
    assert status == 200, body
    assert headers["content-type"] == "application/vnd.apache.parquet", headers
    path = os.path.join(directory, name + ".parquet")
    with open(path, "wb") as file:
        file.write(body)
    rows, count, total = expected(where)
    arrow_rows, arrow_count, arrow_total, arrow_groups = with_pyarrow(path)
    duck_rows, duck_count, duck_total, duck_groups = with_duckdb(path)
    assert (arrow_count, arrow_total) == (count, total), (name, arrow_count, arrow_total, count, total)
    assert (duck_count, duck_total) == (count, total), (name, duck_count, duck_total, count, total)
    assert arrow_rows == rows, f"{name}: pyarrow's rows differ from the table's"
    assert duck_rows == rows, f"{name}: DuckDB's rows differ from the table's"
    assert len(arrow_groups) == duck_groups == row_groups, (name, arrow_groups, duck_groups)
    assert all(size <= ROWS_PER_GROUP for size in arrow_groups), arrow_groups
    print(f"{name}: {count} rows, {total} mg, {row_groups} row groups, {len(body)} bytes: "
          "pyarrow and DuckDB agree with PostgreSQL")


def main():
    awkward, large = ingest()
    print(f"pyarrow {pa.__version__}, duckdb {duckdb.__version__}")
    frm, to = stamp(NOW - datetime.timedelta(days=30)), stamp(NOW + datetime.timedelta(days=1))
    with tempfile.TemporaryDirectory() as directory:
        check("awkward", f"site_id={awkward}&format=parquet", f"site_id = {awkward}", directory, 1)
        check("large", f"site_id={large}&format=parquet", f"site_id = {large}", directory, 3)
        check("every-site", f"from={frm}&to={to}&format=parquet",
              f"measured_at >= '{frm}' and measured_at < '{to}'", directory, 3)
        check("empty", f"site_id={large}&from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z&format=parquet",
              f"site_id = {large} and measured_at >= '2020-01-01Z' and measured_at < '2020-02-01Z'", directory, 0)
    print("export-interop: every check passed")


if __name__ == "__main__":
    sys.exit(main())

"""Python half of test/pipeline/arrow.python.test.ts.

usage: arrow_roundtrip.py IN.arrow EXPECTED.json OUT.arrow

Checks a tagseg table written by TypeScript the way a Python user would see it (pyarrow file
reader, DuckDB SQL), then writes a DuckDB-transformed copy (id + 1000, upper(name), rows in
descending id order, stage 'python') for TypeScript to read back. Exits non-zero with a
message on the first mismatch; prints one JSON summary line on success.
"""
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.ipc

PA_TYPES = {
    "utf8": pa.string(),
    "int32": pa.int32(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "binary": pa.binary(),
    "list<int32>": pa.list_(pa.int32()),
    "list<float32>": pa.list_(pa.float32()),
    "list<utf8>": pa.list_(pa.string()),
}


def check(ok, what):
    if not ok:
        sys.exit(f"arrow_roundtrip.py: {what}")


def plain(value):
    """pyarrow's Python values in the JSON shape the TS test wrote (bytes as lists of ints)."""
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main(in_path, expected_path, out_path):
    with open(expected_path) as f:
        expected = json.load(f)
    columns, rows, meta = expected["columns"], expected["rows"], expected["meta"]

    reader = pa.ipc.open_file(in_path)
    table = reader.read_all()
    schema = table.schema
    md = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}

    check(reader.num_record_batches == expected["numBatches"], f"{reader.num_record_batches} batches, expected {expected['numBatches']}")
    check(md["tagseg.schema_version"] == str(expected["schemaVersion"]), f"schema_version {md.get('tagseg.schema_version')}")
    check(md["tagseg.version"] == expected["tagsegVersion"], f"tagseg.version {md.get('tagseg.version')}")
    check(md["tagseg.stage"] == meta["stage"], f"stage {md.get('tagseg.stage')}")
    check(md["tagseg.params_hash"] == meta["paramsHash"], "params_hash")
    check(json.loads(md["tagseg.classes"]) == meta["classes"], "classes")
    check(json.loads(md["tagseg.extra"]) == meta["extra"], "extra")
    check(json.loads(md["tagseg.columns"]) == columns, "tagseg.columns differs from the column specs")

    check(schema.names == [c["name"] for c in columns], f"column order {schema.names}")
    for c in columns:
        field = schema.field(c["name"])
        check(field.type == PA_TYPES[c["type"]], f"column {c['name']} is {field.type}, expected {PA_TYPES[c['type']]}")
        check(field.nullable == c.get("nullable", False), f"column {c['name']} nullable={field.nullable}")
        fmd = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        if "tensor" in c:
            check(fmd.get("tagseg.tensor.dtype") == c["tensor"]["dtype"], f"{c['name']} tensor dtype {fmd}")
            check(fmd.get("tagseg.tensor.shape") == c["tensor"]["shape"], f"{c['name']} tensor shape {fmd}")

    got = [{k: plain(v) for k, v in row.items()} for row in table.to_pylist()]
    check(got == rows, f"values differ:\n  got      {got}\n  expected {rows}")

    t = table  # DuckDB finds the pyarrow table by its Python variable name
    n, named, id_sum, score_sum, weight_sum, ok_count, blob_bytes, n_ints, probs_sum, n_tags = duckdb.sql(
        "select count(*), count(name), sum(id), sum(score), sum(weight), count_if(ok), sum(octet_length(blob)),"
        " sum(len(ints)), sum(list_sum(probs)), sum(len(tags)) from t"
    ).fetchone()

    def total(col, f):
        return sum(f(r[col]) for r in rows if r[col] is not None)

    check(n == len(rows) and named == sum(r["name"] is not None for r in rows), "duckdb counts")
    check(id_sum == total("id", int), f"duckdb sum(id) {id_sum}")
    check(score_sum == total("score", float), f"duckdb sum(score) {score_sum}")
    check(weight_sum == total("weight", float), f"duckdb sum(weight) {weight_sum}")
    check(ok_count == sum(r["ok"] is True for r in rows), "duckdb count_if(ok)")
    check(blob_bytes == total("blob", len), f"duckdb blob bytes {blob_bytes}")
    check(n_ints == total("ints", len), f"duckdb len(ints) {n_ints}")
    check(probs_sum == total("probs", sum), f"duckdb list_sum(probs) {probs_sum}")
    check(n_tags == total("tags", len), f"duckdb len(tags) {n_tags}")

    rel = duckdb.sql("select * replace (id + 1000 as id, upper(name) as name) from t order by id desc")
    out = rel.fetch_arrow_table() if hasattr(rel, "fetch_arrow_table") else rel.arrow()
    if isinstance(out, pa.RecordBatchReader):
        out = out.read_all()

    # DuckDB's own Arrow types (list child names, nullability) are cast back to the table's schema,
    # metadata included, so TS sees a tagseg table from another stage.
    new_md = dict(md, **{"tagseg.stage": "python", "tagseg.extra": json.dumps({"via": "duckdb"})})
    out_schema = schema.with_metadata(new_md)
    arrays = [out.column(f.name).cast(f.type) for f in out_schema]
    result = pa.Table.from_arrays(arrays, schema=out_schema)
    with pa.ipc.new_file(out_path, out_schema) as writer:
        writer.write_table(result, max_chunksize=2)

    print(json.dumps({"rows": result.num_rows, "duckdb": duckdb.__version__, "pyarrow": pa.__version__}))


if __name__ == "__main__":
    main(*sys.argv[1:4])

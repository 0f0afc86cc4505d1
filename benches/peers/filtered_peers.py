"""Peers of the filtered report: FAISS and LanceDB on the report's own vectors.

The filtered report (`--peers PYTHON`) writes its corpus to a directory and runs this
script with that interpreter, which needs `faiss-cpu`, `lancedb`, `numpy` and
`pyarrow` from the package registry (pinned in requirements-peers.txt):

    python3 filtered_peers.py --dump DIR --json OUT --k 10 --m 16 --ef-construction 64 --ef-search 64

DIR holds `meta.json` (n, dim, queries, selectivities), `vectors.f32` (n x dim unit
vectors, little-endian, row-major), `queries.f32` and `draw.f64` (the uniform draw
per vector that decides its ACL: visible at selectivity s when draw < s).

Both peers use the report's graph parameters, inner product and one thread, and
answer single queries; recall@k is against an exact numpy top-k of the visible
vectors.
  FAISS: IndexHNSWFlat (M = connectivity, efConstruction = expansion_add, efSearch =
    expansion_search), searched with an IDSelectorBitmap of the visible ids.
  LanceDB: a table of (id, draw, vector) with an IVF_HNSW_SQ index of one partition
    (m = connectivity, ef_construction = expansion_add), searched with the
    selectivity as a prefilter (`draw < s`) and ef = expansion_search.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np


def timed(queries, search, min_s=0.5, budget_s=10.0):
    """QPS over single queries (rounds over the query set until min_s) and the
    results of the first round."""
    first = [search(q) for q in queries]
    ops, t0 = 0, time.perf_counter()
    while True:
        for q in queries:
            search(q)
            ops += 1
            if time.perf_counter() - t0 > budget_s:
                break
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s or elapsed > budget_s:
            return ops / elapsed, first


def recall(found, truth):
    hits = [len(set(f) & set(t)) / len(t) if len(t) else 1.0 for f, t in zip(found, truth)]
    return float(np.mean(hits))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dump", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--ef-search", type=int, default=64)
    a = p.parse_args()

    import faiss
    import lancedb
    import pyarrow as pa

    faiss.omp_set_num_threads(1)
    meta = json.load(open(os.path.join(a.dump, "meta.json")))
    n, dim = meta["n"], meta["dim"]
    xs = np.fromfile(os.path.join(a.dump, "vectors.f32"), dtype="<f4").reshape(n, dim)
    qs = np.fromfile(os.path.join(a.dump, "queries.f32"), dtype="<f4").reshape(-1, dim)
    draw = np.fromfile(os.path.join(a.dump, "draw.f64"), dtype="<f8")
    k = a.k

    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, a.m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = a.ef_construction
    faiss.omp_set_num_threads(2)
    hnsw.add(xs)
    faiss.omp_set_num_threads(1)
    faiss_build_s = time.perf_counter() - t

    tmp = tempfile.mkdtemp()
    db = lancedb.connect(tmp)
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "draw": pa.array(draw),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(xs.reshape(-1)), dim),
        }
    )
    t = time.perf_counter()
    tbl = db.create_table("corpus", table)
    tbl.create_index(
        metric="dot",
        index_type="IVF_HNSW_SQ",
        num_partitions=1,
        m=a.m,
        ef_construction=a.ef_construction,
    )
    lance_build_s = time.perf_counter() - t

    rows = []
    for sel in meta["selectivities"]:
        visible = np.nonzero(draw < sel)[0]
        scores = qs @ xs[visible].T
        kk = min(k, len(visible))
        top = np.argsort(-scores, axis=1)[:, :kk]
        truth = [visible[t].tolist() for t in top]

        bits = np.zeros((n + 7) // 8, dtype=np.uint8)
        np.bitwise_or.at(bits, visible >> 3, (1 << (visible & 7)).astype(np.uint8))
        sel_bitmap = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        params = faiss.SearchParametersHNSW(sel=sel_bitmap, efSearch=a.ef_search)

        def faiss_search(q):
            _, ids = hnsw.search(q.reshape(1, -1), k, params=params)
            return [int(i) for i in ids[0] if i >= 0]

        fq, ffound = timed(qs, faiss_search)

        where = f"draw < {sel!r}"

        def lance_search(q):
            r = (
                tbl.search(q, vector_column_name="vector")
                .distance_type("dot")
                .where(where, prefilter=True)
                .ef(a.ef_search)
                .limit(k)
                .to_arrow()
            )
            return r.column("id").to_pylist()

        lq, lfound = timed(qs, lance_search, min_s=0.5, budget_s=10.0)
        row = {
            "selectivity": sel,
            "visible": int(len(visible)),
            "faiss_qps": fq,
            "faiss_recall": recall(ffound, truth),
            "lancedb_qps": lq,
            "lancedb_recall": recall(lfound, truth),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)

    out = {
        "faiss_version": faiss.__version__,
        "lancedb_version": lancedb.__version__,
        "faiss_build_s": faiss_build_s,
        "lancedb_build_s": lance_build_s,
        "m": a.m,
        "ef_construction": a.ef_construction,
        "ef_search": a.ef_search,
        "results": rows,
    }
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

"""Speed and memory of the ReID metrics against a plain per-query numpy evaluation, in one run.

    python benchmarks/bench_eval.py [--queries 10000] [--gallery 50000] [--ref-queries 300]

Data: clustered random embeddings (D = 128, ~5k identities, each view a noisy copy of its
identity's centre, L2-normalised), views spread over keyframes (groups) of about six vehicles;
queries are random views, the gallery the others. Ours (``rank_metrics``) runs in a child process
so that its peak resident memory (VmHWM, reset just before the call) can be reported over the
child's resident size before the call. The reference is fast-reid's evaluation done one query at a
time in numpy (similarity to the whole gallery, drop the query's group, full argsort, cumulative
sums); it is timed on a subset of the queries and extrapolated linearly, and its results on that
subset are compared with ours. A second child ranks 1k queries against a 100k gallery to show that
memory stays bounded by the chunk budget, not by the gallery.

Re-ranking (``--rerank-views N``, 0 to skip): N views, every view a query against all others,
ranked by the k-reciprocal distance (the ``retrieval_rerank`` protocol, k1 = 20, k2 = 6) and by
plain cosine (``retrieval``) in two more children: time, peak memory, and the memory a dense
[N, N] float32 matrix (the usual implementation holds several) would take.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bev_reid.reid.metrics import auto_chunk, query_results, summarize  # noqa: E402

TOPK = (1, 5, 10, 20)


def make_data(num_query: int, num_gallery: int, num_ids: int, dim: int = 128, seed: int = 0):
    """(query, gallery) triples of (emb [N, D] float32, ids [N] int64, groups [N] int64)."""
    n = num_query + num_gallery
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_ids, dim, generator=g), dim=1)
    ids = torch.randint(0, num_ids, (n,), generator=g)
    emb = centres[ids] + 0.12 * torch.randn(n, dim, generator=g)
    emb = torch.nn.functional.normalize(emb, dim=1)
    groups = torch.randint(0, max(1, n // 6), (n,), generator=g)  # ~6 vehicles per keyframe
    perm = torch.randperm(n, generator=g)
    q, gal = perm[:num_query], perm[num_query:]
    return (emb[q], ids[q], groups[q]), (emb[gal], ids[gal], groups[gal])


def reference_per_query(q_emb, q_ids, q_groups, g_emb, g_ids, g_groups):
    """fast-reid's evaluation, one query at a time in numpy: (first_rank, ap, inp, num_pos)."""
    n = len(q_ids)
    first, ap, inp, npos = np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
    for k in range(n):
        sim = g_emb @ q_emb[k]  # G
        keep = g_groups != q_groups[k]
        order = np.argsort(-sim[keep])  # quicksort, as fast-reid: no ties in continuous data
        hits = (g_ids[keep] == q_ids[k])[order]
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits) + 1
        first[k] = ranks[0]
        ap[k] = np.mean(np.cumsum(hits)[ranks - 1] / ranks)
        inp[k] = len(ranks) / ranks[-1]
        npos[k] = len(ranks)
    return first, ap, inp, npos


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(args: argparse.Namespace) -> None:
    """Runs ours once on fresh data and prints a JSON line: time, memory, metrics."""
    torch.set_num_threads(args.threads)
    query, gallery = make_data(args.queries, args.gallery, args.ids)
    # Warm-up on a sliver, so one-off initialisation does not count.
    query_results(query[0][:8], query[1][:8], query[2][:8], *gallery)
    rss_before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    t = time.perf_counter()
    res = query_results(*query, *gallery)
    seconds = time.perf_counter() - t
    out = {
        "seconds": seconds,
        "rss_before_mb": rss_before / 1024,
        "hwm_mb": _status_kb("VmHWM") / 1024,
        "hwm_reset": hwm_reset,
        "chunk": auto_chunk(args.gallery),
        "metrics": summarize(res, TOPK),
    }
    print(json.dumps(out))


def rerank_child(args: argparse.Namespace) -> None:
    """One protocol (``args.protocol``) over ``args.queries`` views as queries and gallery;
    prints a JSON line: time, memory, the all-condition record."""
    from bev_reid.reid.evaluator import ReIDEvaluator

    torch.set_num_threads(args.threads)
    (emb, ids, groups), _ = make_data(args.queries, 0, args.ids)
    ev = ReIDEvaluator((args.protocol,), topk=TOPK, normalize=False, device="cpu")
    ev.process(emb, ids, groups)
    rss_before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t = time.perf_counter()
    (rec,) = ev.evaluate()
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "rss_before_mb": rss_before / 1024,
                      "hwm_mb": _status_kb("VmHWM") / 1024, "record": rec}))  # fmt: skip


def run_child(queries: int, gallery: int, ids: int, threads: int, protocol: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", "--queries", str(queries), "--gallery",
           str(gallery), "--ids", str(ids), "--threads", str(threads)]  # fmt: skip
    cmd += ["--protocol", protocol] if protocol else []
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_metrics(m: dict) -> str:
    ranks = " ".join(f"R{k}={m[f'Rank-{k}']:.3f}" for k in TOPK)
    return (
        f"{ranks} mAP={m['mAP']:.3f} mINP={m['mINP']:.3f} "
        f"(valid {m['num_valid']}/{m['num_queries']} queries, gallery {m['num_gallery']})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--gallery", type=int, default=50_000)
    p.add_argument("--ids", type=int, default=5_000)
    p.add_argument("--ref-queries", type=int, default=300)
    p.add_argument("--big-gallery", type=int, default=100_000)
    p.add_argument("--big-queries", type=int, default=1_000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rerank-views", type=int, default=20_000)
    p.add_argument("--only-rerank", action="store_true", help="skip the plain benchmark")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--protocol", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.protocol:
            rerank_child(args)
        else:
            child(args)
        return

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} threads, CPU")
    print(f"data: D=128, {args.ids} identities, clustered; gallery chunk budget 256 MB")

    if args.only_rerank:
        bench_rerank(args)
        return
    # Reference on a subset, and ours on the same subset for agreement.
    query, gallery = make_data(args.queries, args.gallery, args.ids)
    nq = min(args.ref_queries, args.queries)
    sub = tuple(t[:nq] for t in query)
    np_sub = tuple(t.numpy() for t in sub)
    np_gal = tuple(t.numpy() for t in gallery)
    reference_per_query(*(a[:5] for a in np_sub), *np_gal)  # warm-up
    t = time.perf_counter()
    ref = reference_per_query(*np_sub, *np_gal)
    ref_s = time.perf_counter() - t
    ref_full = ref_s * args.queries / nq
    ours_sub = query_results(*sub, *gallery)
    same_first = int((ours_sub.first_rank.numpy() == ref[0]).sum())
    ap_diff = np.abs(ours_sub.ap.numpy() - ref[1])
    inp_diff = np.abs(ours_sub.inp.numpy() - ref[2])
    num_diff = int(((ap_diff > 1e-12) | (inp_diff > 1e-12)).sum())
    del query, gallery, sub, np_sub, np_gal

    ours = run_child(args.queries, args.gallery, args.ids, args.threads)
    big = run_child(args.big_queries, args.big_gallery, args.ids, args.threads)

    print()
    print(f"{args.queries} queries x {args.gallery} gallery")
    print(
        f"  reference (numpy, per query): {ref_s:.2f} s for {nq} queries "
        f"-> {ref_full:.1f} s extrapolated linearly to {args.queries}"
    )
    print(f"  ours (rank_metrics, chunk {ours['chunk']}): {ours['seconds']:.1f} s measured")
    print(f"  speed-up: {ref_full / ours['seconds']:.1f}x")
    print(
        f"  agreement on the {nq}-query subset: first rank equal for {same_first}/{nq}; "
        f"AP or INP differ for {num_diff} (max |AP diff| {ap_diff.max():.1e}, "
        f"max |INP diff| {inp_diff.max():.1e})"
    )
    if num_diff:
        print(
            "    (numpy's per-query GEMV and torch's GEMM round float32 similarities differently,"
            " ~1e-7: near-ties deep in the ranking can swap)"
        )
    for name, r in (("", ours), ("big", big)):
        if name:
            print(f"\n{args.big_queries} queries x {args.big_gallery} gallery")
            print(f"  ours (chunk {r['chunk']}): {r['seconds']:.1f} s")
        grow = r["hwm_mb"] - r["rss_before_mb"]
        note = "" if r["hwm_reset"] else " (VmHWM not resettable here: includes data set-up)"
        print(
            f"  peak RSS of ours: {r['hwm_mb']:.0f} MB, {grow:.0f} MB above the "
            f"{r['rss_before_mb']:.0f} MB before the call{note}"
        )
        print(f"  metrics: {fmt_metrics(r['metrics'])}")
    full = args.queries * args.gallery * 4 / 2**20
    print(f"\n(a full [Q, G] float32 similarity matrix would be {full:.0f} MB)")
    if same_first < nq or ap_diff.max() > 1e-5 or inp_diff.max() > 1e-5:
        print("WARNING: ours and the reference disagree beyond float32 rounding")
    bench_rerank(args)


def bench_rerank(args: argparse.Namespace) -> None:
    """The re-ranking part (module doc)."""
    if args.rerank_views:
        n = args.rerank_views
        ids = max(1, n // 10)  # about ten views per identity, as in a ReID test set
        plain = run_child(n, 0, ids, args.threads, "retrieval")
        rr = run_child(n, 0, ids, args.threads, "retrieval_rerank")
        print(f"\nre-ranking, {n} views ({ids} identities), each a query against all others:")
        for name, r in (("plain cosine", plain), ("k-reciprocal", rr)):
            rec = r["record"]
            print(
                f"  {name:13} {r['seconds']:6.1f} s, peak RSS {r['hwm_mb']:.0f} MB "
                f"({r['hwm_mb'] - r['rss_before_mb']:.0f} MB above the data): "
                f"R1={rec['rank1']:.3f} mAP={rec['mAP']:.3f}"
            )
        print(
            f"  re-ranking costs {rr['seconds'] / plain['seconds']:.1f}x the plain ranking; "
            f"one dense [N, N] float32 matrix would be {n * n * 4 / 2**20:.0f} MB"
        )


if __name__ == "__main__":
    main()

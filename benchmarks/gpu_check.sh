#!/usr/bin/env bash
# GPU validation of bev_reid's CUDA kernels on one H200 (about 6-8 min once torch is installed).
#   bash benchmarks/gpu_check.sh [REPO]     REPO: the bev-reid checkout (default: $PWD); it is not modified.
# Needs nvcc (compute-sanitizer from the same toolkit is optional), g++, and a Python >= 3.10 with
# a CUDA build of torch whose CUDA major version equals nvcc's (torch's BuildExtension refuses a
# major mismatch; CUDA 13 needs a cu13x torch), numpy<2, pytest, setuptools, wheel and ninja
# (without ninja the build runs serially, ~4 min). There is no internet: when $PY has no CUDA
# torch, set WHEELHOUSE to a folder of wheels made on a connected machine for the same Python, e.g.
#   pip download -d wheelhouse --only-binary=:all: --index-url https://download.pytorch.org/whl/cu130 \
#     --extra-index-url https://pypi.org/simple torch 'numpy<2' pytest ninja setuptools wheel
# (torch pulls triton and the nvidia-* libraries; inductor, hence test_torch_compile, needs triton);
# they are installed offline into a venv under $WORK (adds 1-2 min).
# Tracked files of REPO are copied to $WORK/src and built there (FORCE_CUDA=1, sm_90). Logs go to
# $WORK/logs. Exit status: the number of failed steps. DRYRUN=1 checks the plumbing on a CPU box
# (reuses REPO's CPU-built bev_reid/_C.so, runs on cpu, small sizes, no sanitizer).
set -uo pipefail
REPO=$(cd "${1:-$PWD}" && pwd)
WORK=${WORK:-/tmp/bevreid_gpu}
PY=${PY:-python3}
DRYRUN=${DRYRUN:-0}
T0=$SECONDS
FAILED=()
rm -rf "$WORK/src" "$WORK/logs" && mkdir -p "$WORK/src" "$WORK/logs" || exit 99
LOG=$WORK/logs
step() { echo; echo "=== $1 ($((SECONDS - T0)) s)"; }
fail() { echo "FAIL: $1"; FAILED+=("$1"); }

step "copy the checkout to $WORK/src"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    tar -C "$REPO" --null --ignore-failed-read -T - -cf - | tar -C "$WORK/src" -xf -
else
  cp -a "$REPO/." "$WORK/src/" && rm -rf "$WORK/src/build" "$WORK/src"/bev_reid/_C*.so
fi
[ -d "$REPO/../shared" ] && ln -sfn "$(cd "$REPO/.." && pwd)/shared" "$WORK/shared"  # bench's LiDAR sweep
cd "$WORK/src" || exit 99
export PYTHONPATH=$WORK/src${PYTHONPATH:+:$PYTHONPATH}

step "python and torch"
has_cuda_torch() { "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)' 2>/dev/null; }
if [ "$DRYRUN" != 1 ] && ! has_cuda_torch; then
  if [ ! -x "$WORK/venv/bin/python" ] && [ -n "${WHEELHOUSE:-}" ]; then
    "$PY" -m venv "$WORK/venv" && "$WORK/venv/bin/python" -m pip install -q --no-index \
      --find-links "$WHEELHOUSE" torch 'numpy<2' pytest ninja setuptools wheel || echo "pip install failed"
  fi
  [ -x "$WORK/venv/bin/python" ] && PY=$WORK/venv/bin/python
  has_cuda_torch || { echo "FAIL: $PY has no CUDA torch with a visible GPU (see WHEELHOUSE above)"; exit 99; }
fi
case $PY in */*) export PATH=$(dirname "$PY"):$PATH ;; esac  # ninja from the venv
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PY" -c 'import torch, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__)'
nvcc --version 2>/dev/null | tail -1 || echo "nvcc not on PATH"
"$PY" -c 'import re, subprocess as s, torch; v = re.search(r"release (\d+)", s.run(["nvcc", "--version"], capture_output=True, text=True).stdout).group(1)
if torch.version.cuda and v != torch.version.cuda.split(".")[0]: print(f"WARNING: nvcc {v}.x but torch CUDA {torch.version.cuda}: the build will refuse")' 2>/dev/null
command -v ninja >/dev/null || echo "WARNING: no ninja: the build is serial"

step "build (FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0)"
if [ "$DRYRUN" = 1 ]; then
  cp "$REPO"/bev_reid/_C*.so bev_reid/
elif ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 timeout 480 "$PY" setup.py build_ext --inplace >"$LOG/build.log" 2>&1; then
  tail -40 "$LOG/build.log"; fail build; echo "cannot go on without the build"; exit 99
fi
"$PY" -c 'import bev_reid.ops as o, sys; print(o.__file__, "cuda kernels:", o.cuda_built())
sys.exit(0 if o.__file__.startswith("'"$WORK/src"'") and (o.cuda_built() or '"$DRYRUN"')  else 1)' ||
  { fail "bev_reid not imported from $WORK/src or built without CUDA kernels"; exit 99; }
DEV=cuda; [ "$DRYRUN" = 1 ] && DEV=cpu

step "pytest -m gpu tests/ops"
timeout 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/ops >"$LOG/pytest.log" 2>&1
rc=$?; tail -15 "$LOG/pytest.log"
if [ $rc -ne 0 ] || { [ "$DRYRUN" != 1 ] && ! grep -qE "[0-9]+ passed" "$LOG/pytest.log"; }; then fail "pytest -m gpu (rc $rc)"; fi

step "benchmarks/bench_ops.py --device $DEV"
timeout 180 "$PY" benchmarks/bench_ops.py --device "$DEV" --repeat 5 $([ "$DRYRUN" = 1 ] && echo --skip-large) 2>&1 | tee "$LOG/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail bench_ops

step "extra checks"
cat >"$WORK/extras.py" <<'PYEOF'
"""Extra checks of bev_reid's CUDA ops that tests/ops does not make (DEV=cpu BIG=0: dry run)."""
import os, sys, time  # noqa: E401
import torch
from bev_reid.ops import bev_pool, dynamic_voxelize, fused_splat, splat_plan, voxelize

DEV = os.environ.get("DEV", "cuda")
CUDA, BIG = DEV == "cuda", os.environ.get("BIG", "1") == "1"
N_BIG = int(os.environ.get("N_BIG", (1 << 26) + 4099))  # x 64 channels > 2^32 elements
P_BIG = int(os.environ.get("P_BIG", (1 << 29) + 17))  # x 4 features > 2^31 elements
BWD = torch.ops.bev_reid.bev_pool_backward
VOXEL, RANGE = (0.5, 0.5, 1.0), (-4.0, -3.0, -2.0, 4.0, 3.0, 2.0)
fails = []


def check(name, info=False):
    def run(fn):
        t = time.time()
        try:
            status, msg = ("INFO" if info else "PASS"), (fn() or "")
        except Exception as e:  # noqa: BLE001
            status, msg = ("INFO" if info else "FAIL"), f"{type(e).__name__}: {str(e)[:300]}"
        fails.extend([name] if status == "FAIL" else [])
        print(f"[{status}] {name} ({time.time() - t:.1f}s) {msg}", flush=True)
        try:
            if CUDA:
                torch.cuda.synchronize(), torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            print(f"       after it: {type(e).__name__}: {str(e)[:200]}", flush=True)
    return run


def points(n, c, batch, grid, dtype=torch.float32, idx=torch.int64, outside=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(n, 4, generator=g) * torch.tensor([*grid, batch])).long()
    bad = torch.rand(n, generator=g) < outside
    coords[bad, 3] = torch.where(torch.rand(int(bad.sum()), generator=g) < 0.5, -1, batch)
    coords[bad & (torch.rand(n, generator=g) < 0.5), 0] = -7
    return torch.randn(n, c, generator=g).to(dtype), coords.to(idx)


@check("bev_pool GPU == CPU bitwise, fwd+bwd, fp32/fp16/bf16/fp64 x int32/int64 x C 1/33/80")
def _():
    grid, batch = (64, 48, 3), 2
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for idx in (torch.int32, torch.int64):
            for c in (1, 33, 80):
                f, co = points(60000, c, batch, grid, dtype, idx, seed=c)
                ref, out = bev_pool(f, co, batch, grid), bev_pool(f.to(DEV), co.to(DEV), batch, grid).cpu()
                assert torch.equal(out, ref), f"fwd {dtype} {idx} C={c} diff {(out.double() - ref.double()).abs().max()}"
                go = torch.randn(ref.shape).to(dtype)
                gout = BWD(go.to(DEV), co.to(DEV), batch, list(grid)).cpu()
                assert torch.equal(gout, BWD(go, co, batch, list(grid))), f"bwd {dtype} {idx} C={c}"


@check("bev_pool fp16/bf16 vs fp32, skewed 2M x 80")
def _():
    n, c, grid = 2_000_000, 80, (256, 256, 1)
    f, co = points(n, c, 1, grid, seed=1)
    co[:, :2] = (co[:, :2].float() ** 2 / 256).long()  # crowded low corner: long intervals
    f, co = f.to(DEV), co.to(DEV)
    ref = bev_pool(f, co, 1, grid).double()
    msg = []
    for dtype, tol in ((torch.float16, 3e-3), (torch.bfloat16, 2.5e-2)):
        err = float((bev_pool(f.to(dtype), co, 1, grid).double() - ref).abs().max() / ref.abs().max())
        msg.append(f"{dtype} {err:.1e}")
        assert err < tol, f"{dtype} rel err {err:.2e} >= {tol}"
    return ", ".join(msg)


@check("bev_pool N*C > 2^32: exact sums, gathered grads (int64 indexing)")
def _():
    if not BIG:
        return "skipped"
    n, c, batch, grid = N_BIG, 64, 2, (96, 80, 1)
    xn, yn, zn = grid
    g = torch.Generator(device=DEV).manual_seed(0)
    co = torch.stack([torch.randint(0, s, (n,), generator=g, device=DEV, dtype=torch.int32) for s in (xn, yn, zn, batch)], 1)
    ar = torch.arange(n, device=DEV)
    co[ar % 97 == 0, 3] = batch  # dropped points all along the array
    m = ar % 4
    del ar
    base = ((torch.arange(4)[:, None] + torch.arange(c)) % 4).float().to(DEV)  # 4 x C small ints
    feats = base[m]  # N x C: every voxel sum is exact in fp32
    out = bev_pool(feats, co, batch, grid)
    del feats
    x, y, z, b = co.long().unbind(1)
    inside, rank, v = b < batch, ((b * zn + z) * xn + x) * yn + y, batch * zn * xn * yn
    cnt = torch.bincount((rank * 4 + m)[inside], minlength=v * 4).view(v, 4).double()
    exp = (cnt @ base.double()).view(batch, zn, xn, yn, c).permute(0, 4, 1, 2, 3)
    assert torch.equal(out.double(), exp), f"fwd diff {(out.double() - exp).abs().max()}"
    go = torch.randn(batch, c, zn, xn, yn, device=DEV)
    gf = BWD(go, co, batch, list(grid))
    rows = torch.cat([torch.arange(n - 4096, n, device=DEV), torch.randint(0, n, (4096,), device=DEV)])
    want = go.permute(0, 2, 3, 4, 1).reshape(-1, c)[torch.where(inside, rank, 0)[rows]]
    want[~inside[rows]] = 0
    assert torch.equal(gf[rows], want), "bwd rows differ"
    return f"N={n:,} C={c} N*C={n * c:,}"


@check("voxelize P*F > 2^31, only the tail inside: equals CPU on the tail")
def _():
    if not BIG:
        return "skipped"
    p, tail = P_BIG, 3000
    pts = torch.full((p, 4), 1e6, device=DEV)
    t = (torch.rand(tail, 4, generator=torch.Generator().manual_seed(2)) - 0.5) * torch.tensor([8.0, 6, 4, 1])
    pts[-tail:] = t.to(DEV)
    dyn = dynamic_voxelize(pts, VOXEL, RANGE)
    assert bool((dyn[:-tail] == -1).all()), "outside points got a cell"
    assert torch.equal(dyn[-tail:].cpu(), dynamic_voxelize(t, VOXEL, RANGE)), "tail cells differ"
    del dyn
    for a, r, nm in zip(voxelize(pts, VOXEL, RANGE, 5, 500), voxelize(t, VOXEL, RANGE, 5, 500), "VCN"):
        assert torch.equal(a.cpu(), r), f"hard voxelize {nm} differs"
    return f"P={p:,}"


@check("empty/degenerate: N=0, B=0, C=0, all outside, 1x1x1 grid, P=0, max_points=max_voxels=1")
def _():
    z = lambda *s, **k: torch.zeros(*s, device=DEV, **k)  # noqa: E731
    L = torch.long
    assert bev_pool(z(0, 5), z(0, 4, dtype=L), 2, (3, 3, 1)).abs().sum() == 0
    assert bev_pool(z(4, 5), z(4, 4, dtype=torch.int32), 0, (3, 3, 1)).shape == (0, 5, 1, 3, 3)
    assert bev_pool(z(4, 0), z(4, 4, dtype=L), 2, (3, 3, 1)).shape == (2, 0, 1, 3, 3)
    assert bev_pool(torch.ones(6, 3, device=DEV), z(6, 4, dtype=L) - 1, 2, (3, 3, 1)).abs().sum() == 0
    one = bev_pool(torch.ones(6, 3, device=DEV, dtype=torch.half), z(6, 4, dtype=L), 1, (1, 1, 1))
    assert one.flatten().tolist() == [6.0] * 3
    assert BWD(z(2, 3, 1, 3, 3), z(0, 4, dtype=L), 2, [3, 3, 1]).shape == (0, 3)
    assert BWD(z(0, 3, 1, 3, 3), z(5, 4, dtype=L), 0, [3, 3, 1]).abs().sum() == 0
    assert dynamic_voxelize(z(0, 4), VOXEL, RANGE).shape == (0, 3)
    assert [tuple(t.shape) for t in voxelize(z(0, 4), VOXEL, RANGE, 3, 7)] == [(0, 3, 4), (0, 3), (0,)]
    assert voxelize(torch.full((9, 4), 99.0, device=DEV), VOXEL, RANGE, 3, 7)[0].shape[0] == 0
    assert voxelize(z(9, 4), VOXEL, RANGE, 1, 1)[2].tolist() == [1]


@check("determinism: 3 runs bitwise equal under use_deterministic_algorithms(True); voxelize 1M == CPU")
def _():
    f, co = points(2_000_000, 80, 2, (200, 200, 1), seed=4)
    co[:, :2] //= 4
    f, co = f.to(DEV), co.to(DEV)
    go, pts = torch.randn(2, 80, 1, 200, 200, device=DEV), torch.randn(1_000_000, 5, device=DEV) * 3
    torch.use_deterministic_algorithms(True)
    try:
        outs = [bev_pool(f, co, 2, (200, 200, 1)) for _ in range(3)]
        grads = [BWD(go, co, 2, [200, 200, 1]) for _ in range(3)]
        vox = [voxelize(pts, VOXEL, RANGE, 10, 2000) for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(outs[0], o) for o in outs), "forward differs between runs"
    assert all(torch.equal(grads[0], g) for g in grads), "backward differs between runs"
    assert all(torch.equal(a, b) for v in vox for a, b in zip(vox[0], v)), "voxelize differs between runs"
    ref = voxelize(pts.cpu(), VOXEL, RANGE, 10, 2000)
    assert all(torch.equal(a.cpu(), b) for a, b in zip(vox[0], ref)), "voxelize GPU != CPU"


@check("gradcheck + gradgradcheck, int32 coords, duplicates, dropped points")
def _():
    f, co = points(80, 3, 2, (3, 2, 2), torch.float64, torch.int32, outside=0.3, seed=5)
    f, co = f.to(DEV).requires_grad_(), co.to(DEV)
    fn = lambda t: bev_pool(t, co, 2, (3, 2, 2))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (f,)) and torch.autograd.gradgradcheck(fn, (f,))


@check("side stream, non-contiguous feats, storage offset of 2 bytes (fp16)")
def _():
    f, co = points(30000, 16, 2, (40, 30, 2), torch.float16, seed=6)
    ref, co = bev_pool(f, co, 2, (40, 30, 2)), co.to(DEV)
    big = torch.zeros(f.numel() + 1, dtype=torch.float16, device=DEV)
    big[1:] = f.flatten().to(DEV)
    f_off, f_nc = big[1:].view(30000, 16), f.to(DEV).t().contiguous().t()
    s = torch.cuda.Stream() if CUDA else None
    if CUDA:
        s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s) if CUDA else torch.no_grad():
        a, b = bev_pool(f_off, co, 2, (40, 30, 2)), bev_pool(f_nc, co, 2, (40, 30, 2))
    if CUDA:
        s.synchronize()
    assert torch.equal(a.cpu(), ref), "storage offset"
    assert torch.equal(b.cpu(), ref), "non-contiguous"


@check("forward time, LSS frustum (long voxel runs) vs uniform coords, 2M x 80", info=True)
def _():
    if not CUDA:
        return "skipped"
    sys.path.insert(0, "benchmarks")
    from bench_ops import frustum_points

    f, co = frustum_points(1, 6, 118, 32, 88, 80, (256, 256, 1))
    f, co = f.cuda(), co.cuda()
    uni = co.clone()
    uni[:, :2] = torch.randint(0, 256, (co.shape[0], 2), device="cuda")
    res = []
    for name, c in (("frustum", co), ("uniform", uni)):
        bev_pool(f, c, 1, (256, 256, 1))
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(10):
            bev_pool(f, c, 1, (256, 256, 1))
        e1.record()
        torch.cuda.synchronize()
        longest = int(torch.unique(c[:, 0] * 256 + c[:, 1], return_counts=True)[1].max())
        res.append(f"{name} {e0.elapsed_time(e1) / 10:.3f} ms (longest run {longest})")
    return "; ".join(res)


@check("CUDA graph capture of bev_pool (no host sync since the chunked sums)")
def _():
    if not CUDA:
        return "skipped"
    f, co = points(1000, 8, 1, (8, 8, 1))
    f, co = f.cuda(), co.cuda()
    bev_pool(f, co, 1, (8, 8, 1))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = bev_pool(f, co, 1, (8, 8, 1))
    g.replay()
    return f"captured, sum {float(out.sum()):.3f}"


@check("fused_splat GPU == CPU bitwise, plan + fwd + bwd, LSS default and large frusta, 4 dtypes")
def _():
    sys.path.insert(0, "benchmarks")
    from bench_ops import frustum_cells

    fbwd = torch.ops.bev_reid.fused_splat_backward
    for (b, n, d, h, w, c, grid) in ((4, 6, 41, 8, 22, 64, (200, 200, 1)), (1, 6, 118, 32, 88, 80, (256, 256, 1))):
        cells = frustum_cells(b, n, d, h, w, grid)
        cells[0, 0, :, :, :5] = -1  # some dropped points
        g = torch.Generator().manual_seed(c)
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            depth = torch.randn(b, n, d, h, w, generator=g).softmax(2).to(dtype)
            ctx = torch.randn(b, n, h, w, c, generator=g).to(dtype)
            pc, pg = splat_plan(cells, grid), splat_plan(cells.to(DEV), grid)
            assert all(torch.equal(x, y.cpu()) for x, y in zip(pc[:4], pg[:4])), "plans differ"
            ref = fused_splat(depth, ctx, pc)
            assert torch.equal(fused_splat(depth.to(DEV), ctx.to(DEV), pg).cpu(), ref), f"fwd {dtype} {grid}"
            go = torch.randn(ref.shape, generator=g).to(dtype)
            want = fbwd(go, depth, ctx, *pc[:4], list(grid))
            got = fbwd(go.to(DEV), depth.to(DEV), ctx.to(DEV), *pg[:4], list(grid))
            assert all(torch.equal(x.cpu(), y) for x, y in zip(got, want)), f"bwd {dtype} {grid}"


@check("fused_splat plan + forward + backward captured in one CUDA graph and replayed")
def _():
    if not CUDA:
        return "skipped"
    sys.path.insert(0, "benchmarks")
    from bench_ops import frustum_cells

    grid = (200, 200, 1)
    cells = frustum_cells(4, 6, 41, 8, 22, grid).cuda()
    depth = torch.randn(4, 6, 41, 8, 22, device="cuda").softmax(2)
    ctx = torch.randn(4, 6, 8, 22, 64, device="cuda")
    go = torch.randn(4, 64, 1, 200, 200, device="cuda")
    fbwd = torch.ops.bev_reid.fused_splat_backward
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        p = splat_plan(cells, grid)
        fused_splat(depth, ctx, p), fbwd(go, depth, ctx, *p[:4], list(grid))
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        p = splat_plan(cells, grid)
        out = fused_splat(depth, ctx, p)
        gd, gc = fbwd(go, depth, ctx, *p[:4], list(grid))
    depth.mul_(2)
    graph.replay()
    torch.cuda.synchronize()
    p2 = splat_plan(cells, grid)
    assert torch.equal(out, fused_splat(depth, ctx, p2)), "replayed forward differs"
    assert torch.equal(gc, fbwd(go, depth, ctx, *p2[:4], list(grid))[1]), "replayed backward differs"
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(20):
        graph.replay()
    t1.record()
    torch.cuda.synchronize()
    return f"replay (plan + fwd + bwd, LSS default, batch 4) {t0.elapsed_time(t1) / 20:.3f} ms"



print(f"extras: {len(fails)} failed {fails}")
sys.exit(1 if fails else 0)
PYEOF
BIG=1; [ "$DRYRUN" = 1 ] && BIG=0
DEV=$DEV BIG=$BIG timeout 240 "$PY" "$WORK/extras.py" 2>&1 | tee "$LOG/extras.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "extra checks"

step "compute-sanitizer on small cases"
cat >"$WORK/tiny.py" <<'PYEOF'
import torch
from bev_reid.ops import bev_pool, dynamic_voxelize, voxelize

g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for idx in (torch.int32, torch.int64):
        for n, c in ((1, 1), (37, 33), (700, 8)):
            co = (torch.rand(n, 4, generator=g) * torch.tensor([7, 5, 2, 3])).long()
            co[::5, 3], co[1::7, 0] = 2, -1  # dropped: batch 2 of 2, negative x
            f = torch.randn(n, c, generator=g).to(dtype).cuda().requires_grad_()
            out = bev_pool(f, co.to(idx).cuda(), 2, (6, 5, 2))
            out.backward(torch.randn_like(out))
bev_pool(torch.ones(4, 3, device="cuda"), torch.full((4, 4), -1, device="cuda"), 2, (6, 5, 2))
from bev_reid.ops import fused_splat, splat_plan
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for shape, c in (((1, 1, 1, 1, 1), 1), ((2, 3, 5, 2, 3), 33), ((1, 2, 70, 1, 1), 8)):
        cells = (torch.rand(*shape, 3, generator=g) * torch.tensor([7, 5, 2])).long()
        cells.view(-1, 3)[::4, 0] = -1  # dropped
        cells.view(-1, 3)[1::3] = torch.tensor([3, 2, 1])  # a long run
        d = torch.rand(shape, generator=g).to(dtype).cuda().requires_grad_()
        x = torch.randn(*shape[:2], *shape[3:], c, generator=g).to(dtype).cuda().requires_grad_()
        out = fused_splat(d, x, splat_plan(cells.cuda(), (7, 5, 2)))
        out.backward(torch.randn_like(out))
pts = (torch.rand(500, 5, generator=g).cuda() - 0.5) * 10
for dtype in (torch.float32, torch.float64):
    dynamic_voxelize(pts.to(dtype), (0.5, 0.5, 1.0), (-4, -3, -2, 4, 3, 2))
    for mp, mv in ((1, 1), (3, 40), (64, 10000)):
        voxelize(pts.to(dtype), (0.5, 0.5, 1.0), (-4, -3, -2, 4, 3, 2), mp, mv)
torch.cuda.synchronize()
print("tiny: done")
PYEOF
SAN=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}"/bin/compute-sanitizer 2>/dev/null || true)
if [ "$DRYRUN" = 1 ] || [ -z "$SAN" ]; then
  echo "skipped (dry run or no compute-sanitizer)"
else
  for tool in memcheck initcheck; do
    if [ $((SECONDS - T0)) -gt 420 ]; then echo "$tool skipped: time budget"; continue; fi
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 "$SAN" --tool $tool --print-limit 20 "$PY" "$WORK/tiny.py" >"$LOG/$tool.log" 2>&1
    rc=$?; grep -E "ERROR SUMMARY|tiny: done" "$LOG/$tool.log"
    ours=$(grep -cE "^=+ +at .*bev_reid::" "$LOG/$tool.log")
    if [ "$ours" -gt 0 ]; then grep -B3 -A2 -E "^=+ +at .*bev_reid::" "$LOG/$tool.log" | head -30; fail "$tool: $ours reports in bev_reid kernels"
    elif [ $rc -eq 124 ]; then echo "$tool: timed out (inconclusive)"
    elif [ $rc -ne 0 ] || ! grep -q "tiny: done" "$LOG/$tool.log"; then tail -5 "$LOG/$tool.log"; fail "$tool (rc $rc)"
    elif ! grep -q "ERROR SUMMARY: 0 errors" "$LOG/$tool.log"; then echo "$tool: reports outside bev_reid (see $LOG/$tool.log)"; fi
  done
fi

step "summary"
echo "elapsed $((SECONDS - T0)) s; logs in $LOG"
if [ ${#FAILED[@]} -eq 0 ]; then echo "ALL PASSED"; else printf 'FAILED: %s\n' "${FAILED[@]}"; fi
exit ${#FAILED[@]}

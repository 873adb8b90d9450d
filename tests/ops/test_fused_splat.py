"""fused_splat against the plain torch splat: plan, values, gradients, edge cases, registration.

The yardstick is ``fused_splat_reference`` (the [P, C] outer product of depth and context, then
``bev_pool_reference``) and, for the plan, a plain torch sort; ``bev_pool`` on the outer product is
the third splat that must agree. CUDA twins (marked ``gpu``) also check that the GPU gives the CPU's
bits, that the forward replays in a CUDA graph, and that runs repeat exactly.
"""

import itertools

import numpy as np
import pytest
import torch

from bev_reid.ops import bev_pool, cuda_built, fused_splat, fused_splat_reference, splat_plan

OPS = torch.ops.bev_reid


def make_frustum(
    shape, channels, grid, *, dtype=torch.float64, index_dtype=torch.int64, outside=0.2,
    long_run=0, seed=0,
):  # fmt: skip
    """Random depth [B, N, D, H, W], context [B, N, H, W, C] and cells [B, N, D, H, W, 3].

    A share ``outside`` of the points has a cell off the grid (one axis below 0 or past its end);
    the first ``long_run`` points of camera 0 of each sample share one cell, a run that crosses
    chunk boundaries (the kernels cut runs every 32 sorted points).
    """
    g = torch.Generator().manual_seed(seed)
    b, n, d, h, w = shape
    x_n, y_n, z_n = grid
    depth = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    context = torch.randn(b, n, h, w, channels, generator=g, dtype=torch.float64).to(dtype)
    hi = torch.tensor([x_n, y_n, z_n])
    cells = (torch.rand(*shape, 3, generator=g) * hi).long()  # B x N x D x H x W x 3
    flat = cells.view(-1, 3)
    bad = torch.rand(flat.shape[0], generator=g) < outside
    axis = torch.randint(0, 3, (flat.shape[0],), generator=g)
    rows = torch.arange(flat.shape[0])
    shift = torch.where(
        torch.rand(flat.shape[0], generator=g) < 0.5, -1 - flat[rows, axis], hi[axis]
    )
    flat[rows[bad], axis[bad]] += shift[bad]
    if long_run:
        cam0 = cells[:, 0].reshape(b, -1, 3)  # B x (D H W) x 3, a view
        cam0[:, :long_run] = torch.tensor([x_n // 2, y_n // 3, z_n - 1])
    return depth, context, cells.to(index_dtype)


def plan_reference(cells, grid):
    """ranks, order, sorted_ranks, offsets of the plan, with plain torch ops."""
    x_n, y_n, z_n = grid
    batch = cells.shape[0]
    x, y, z = cells.long().unbind(-1)  # each B x N x D x H x W
    b = torch.arange(batch).view(batch, 1, 1, 1, 1).expand_as(x)
    inside = (x >= 0) & (x < x_n) & (y >= 0) & (y < y_n) & (z >= 0) & (z < z_n)
    num_cells = batch * z_n * x_n * y_n
    ranks = torch.where(inside, ((b * z_n + z) * x_n + x) * y_n + y, num_cells)
    order = ranks.flatten().argsort(stable=True)
    sorted_ranks = ranks.flatten()[order]
    offsets = torch.searchsorted(sorted_ranks, torch.arange(num_cells + 1))
    return ranks, order, sorted_ranks, offsets


def splat_all(depth, context, cells, grid, device):
    plan = splat_plan(cells.to(device), grid)
    return fused_splat(depth.to(device), context.to(device), plan)


SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 3, 5, 3, 4),
    (3, 2, 9, 3, 4),
]
SIZES = list(
    itertools.product(
        SHAPES,
        [1, 7, 40, 70],  # channels: one lane, partial warp, two and three lane groups
        [(1, 1, 1), (9, 6, 2), (16, 16, 1)],  # grid (X, Y, Z)
        [0, 45, 100],  # long run of one cell: none, over one, over three chunk boundaries
    )
)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_plan_matches_reference(device, index_dtype):
    grid = (9, 6, 2)
    _, _, cells = make_frustum((3, 2, 9, 3, 4), 1, grid, index_dtype=index_dtype, long_run=80)
    plan = splat_plan(cells.to(device), grid)
    for got, want, name in zip(
        plan[:4], plan_reference(cells, grid), ("ranks", "order", "sorted_ranks", "offsets"),
        strict=True,
    ):  # fmt: skip
        assert got.dtype == torch.int64 and got.device.type == device, name
        assert torch.equal(got.cpu(), want), name
    assert plan.grid == grid and plan.shape == (3, 2, 9, 3, 4)


@pytest.mark.parametrize("shape,c,grid,long_run", SIZES)
def test_forward_matches_reference(device, shape, c, grid, long_run):
    points = shape[2] * shape[3] * shape[4]
    depth, context, cells = make_frustum(
        shape, c, grid, long_run=min(long_run, points), seed=sum(shape) + c
    )
    out = splat_all(depth, context, cells, grid, device)
    ref = fused_splat_reference(depth, context, cells, grid)
    assert out.shape == (shape[0], c, grid[2], grid[0], grid[1]) and out.dtype == torch.float64
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-12)


def test_three_splats_agree(device):
    """fused_splat, bev_pool on the outer product and the reference agree (fp32, grads too)."""
    grid, shape, c = (12, 10, 2), (2, 3, 7, 4, 5), 33
    depth, context, cells = make_frustum(shape, c, grid, dtype=torch.float32, long_run=90, seed=3)
    weight = torch.randn(shape[0], c, grid[2], grid[0], grid[1])
    results = []
    for splat in ("fused", "bev_pool", "reference"):
        d = depth.clone().to(device).requires_grad_()
        x = context.clone().to(device).requires_grad_()
        if splat == "fused":
            out = fused_splat(d, x, splat_plan(cells.to(device), grid))
        elif splat == "bev_pool":
            feats = (d.unsqueeze(-1) * x.unsqueeze(2)).reshape(-1, c)  # P x C
            b = torch.arange(shape[0], device=device).repeat_interleave(feats.shape[0] // shape[0])
            coords = torch.cat([cells.to(device).reshape(-1, 3), b[:, None]], 1)
            out = bev_pool(feats, coords, shape[0], grid)
        else:
            out = fused_splat_reference(d, x, cells.to(device), grid)
        (out * weight.to(device)).sum().backward()
        results.append((out.detach().cpu(), d.grad.cpu(), x.grad.cpu()))
    for other in results[1:]:
        for got, want in zip(results[0], other, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_grad_matches_reference(device):
    grid, shape, c = (10, 8, 3), (2, 3, 6, 4, 5), 16
    depth, context, cells = make_frustum(shape, c, grid, long_run=70, seed=5)
    weight = torch.randn(shape[0], c, grid[2], grid[0], grid[1], dtype=torch.float64)
    d1, x1 = depth.clone().to(device).requires_grad_(), context.clone().to(device).requires_grad_()
    plan = splat_plan(cells.to(device), grid)
    (fused_splat(d1, x1, plan) * weight.to(device)).sum().backward()
    d2, x2 = depth.clone().requires_grad_(), context.clone().requires_grad_()
    (fused_splat_reference(d2, x2, cells, grid) * weight).sum().backward()
    torch.testing.assert_close(d1.grad.cpu(), d2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x1.grad.cpu(), x2.grad, rtol=1e-10, atol=1e-12)
    # Dropped points get no gradient at all.
    dropped = plan.ranks.cpu() == shape[0] * grid[0] * grid[1] * grid[2]
    assert dropped.any() and (d1.grad.cpu()[dropped] == 0).all()


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]
)
def test_dtypes(device, dtype, tol):
    grid, shape, c = (16, 12, 2), (2, 3, 8, 4, 6), 24
    depth, context, cells = make_frustum(shape, c, grid, dtype=dtype, long_run=60, seed=9)
    d = depth.clone().to(device).requires_grad_()
    x = context.clone().to(device).requires_grad_()
    out = fused_splat(d, x, splat_plan(cells.to(device), grid))
    assert out.dtype == dtype
    grad_out = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    out.backward(grad_out.to(device))
    # exact sums of the rounded inputs
    d64, x64 = depth.double().requires_grad_(), context.double().requires_grad_()
    ref = fused_splat_reference(d64, x64, cells, grid)
    ref.backward(grad_out.double())
    for got, want in ((out, ref), (d.grad, d64.grad), (x.grad, x64.grad)):
        assert got.dtype == dtype
        err = (got.detach().cpu().double() - want.detach()).abs().max() / want.abs().max()
        assert err < tol


def test_gradcheck_and_gradgradcheck(device):
    grid, shape = (4, 3, 2), (2, 2, 3, 2, 3)
    depth, context, cells = make_frustum(shape, 3, grid, outside=0.3, long_run=10, seed=7)
    plan = splat_plan(cells.to(device), grid)
    inputs = (depth.to(device).requires_grad_(), context.to(device).requires_grad_())
    fn = lambda d, x: fused_splat(d, x, plan)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_long_run_sums_in_pieces_of_32():
    """A run is summed in pieces cut at sorted positions 32, 64, ...; pieces added in order.

    This is the order the CUDA kernels add in (checked bit for bit on a GPU below); here it is
    emulated in float32 with numpy, one product and one add at a time.
    """
    grid, shape, c = (3, 3, 1), (1, 1, 100, 1, 1), 3
    depth, context, _ = make_frustum(shape, c, grid, dtype=torch.float32, seed=13)
    cells = torch.zeros(*shape, 3, dtype=torch.long)
    cells[0, 0, :5] = -1  # five dropped points, so that the run starts at sorted position 0
    out = fused_splat(depth, context, splat_plan(cells, grid))[0, :, 0, 0, 0].numpy()
    w = depth.flatten()[5:].numpy()  # 95 kept points, sorted positions 0 .. 94
    x = context.flatten(0, 3)[0].numpy()
    want = np.zeros(c, np.float32)
    for start in range(0, 95, 32):
        piece = np.zeros(c, np.float32)
        for k in range(start, min(start + 32, 95)):
            piece = piece + (np.float32(w[k]) * x).astype(np.float32)
        want = piece if start == 0 else (want + piece).astype(np.float32)
    assert np.array_equal(out, want)


def test_deterministic_across_runs_and_threads():
    grid, shape, c = (40, 40, 1), (2, 6, 20, 4, 11), 32
    depth, context, cells = make_frustum(shape, c, grid, dtype=torch.float32, long_run=300, seed=11)
    grad_out = torch.randn(2, c, 1, 40, 40)
    threads = torch.get_num_threads()

    def run():
        d, x = depth.clone().requires_grad_(), context.clone().requires_grad_()
        out = fused_splat(d, x, splat_plan(cells, grid))
        out.backward(grad_out)
        return out.detach(), d.grad, x.grad

    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(max(2, threads))
        many, again = run(), run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c_ in zip(one, many, again, strict=True):
        assert torch.equal(a, b) and torch.equal(b, c_)


@pytest.mark.parametrize(
    "shape,c",
    [((0, 2, 3, 2, 2), 4), ((2, 0, 3, 2, 2), 4), ((2, 2, 0, 2, 2), 4), ((2, 2, 3, 0, 2), 4),
     ((2, 2, 3, 2, 2), 0)],
    ids=["B=0", "N=0", "D=0", "H=0", "C=0"],
)  # fmt: skip
def test_empty_inputs(device, shape, c):
    grid = (3, 4, 2)
    depth, context, cells = make_frustum(shape, c, grid, seed=1)
    d, x = depth.to(device).requires_grad_(), context.to(device).requires_grad_()
    plan = splat_plan(cells.to(device), grid)
    out = fused_splat(d, x, plan)
    assert out.shape == (shape[0], c, 2, 3, 4) and (out == 0).all()
    out.sum().backward()
    assert d.grad.shape == depth.shape and (d.grad == 0).all()
    assert x.grad.shape == context.shape and (x.grad == 0).all()


def test_all_points_outside(device):
    grid, shape = (3, 5, 1), (2, 2, 4, 2, 3)
    depth, context, cells = make_frustum(shape, 4, grid, outside=1.0, seed=2)
    d = depth.to(device).requires_grad_()
    out = fused_splat(d, context.to(device), splat_plan(cells.to(device), grid))
    assert (out == 0).all()
    out.sum().backward()
    assert (d.grad == 0).all()


def _plan_args(shape=(1, 2, 3, 2, 2), grid=(3, 4, 2)):
    depth, context, cells = make_frustum(shape, 5, grid, dtype=torch.float32)
    return depth, context, splat_plan(cells, grid)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d, x, p: (d[0], x, p), r"depth must be \[B, N, D, H, W\]"),
        (lambda d, x, p: (d.long(), x, p), "depth must be float32, float64, float16 or bfloat16"),
        (lambda d, x, p: (d.to(torch.float8_e4m3fn), x.to(torch.float8_e4m3fn), p),
         "depth must be float32, float64, float16 or bfloat16"),
        (lambda d, x, p: (d, x.double(), p), "context is Double but depth is Float"),
        (lambda d, x, p: (d, x.movedim(-1, 2), p), r"context .* must be \[B, N, H, W, C\]"),
        (lambda d, x, p: (d, x[..., 0], p), r"context must be \[B, N, H, W, C\]"),
        (lambda d, x, p: (d[:, :1], x[:, :1], p), r"ranks must be \[1, 1, 3, 2, 2\]"),
        (lambda d, x, p: (d, x, p._replace(order=p.order.int())), "order must be int64"),
        (lambda d, x, p: (d, x, p._replace(offsets=p.offsets[:-1])), r"offsets must be \[25\]"),
        (lambda d, x, p: (d, x, p._replace(grid=(3, 4, 0))), r"every grid size must be in \[1"),
    ],
)  # fmt: skip
def test_bad_input(change, match):
    depth, context, plan = change(*_plan_args())
    with pytest.raises(RuntimeError, match=match):
        fused_splat(depth, context, plan)


def test_bad_plan_input():
    with pytest.raises(RuntimeError, match=r"cells must be \[B, N, D, H, W, 3\]"):
        splat_plan(torch.zeros(1, 2, 3, 2, 2, 2, dtype=torch.long), (3, 4, 2))
    with pytest.raises(RuntimeError, match="cells must be int32 or int64"):
        splat_plan(torch.zeros(1, 2, 3, 2, 2, 3), (3, 4, 2))
    with pytest.raises(ValueError, match=r"grid must be \(X, Y, Z\)"):
        splat_plan(torch.zeros(1, 2, 3, 2, 2, 3, dtype=torch.long), (3, 4))


def test_bad_grad_out():
    depth, context, plan = _plan_args()
    with pytest.raises(RuntimeError, match=r"grad_out must be \[B, C, Z, X, Y\]"):
        OPS.fused_splat_backward(torch.zeros(1, 5, 2, 4, 3), depth, context, *plan[:4], [3, 4, 2])


def test_opcheck(device):
    grid, shape = (5, 4, 2), (2, 2, 3, 2, 3)
    depth, context, cells = make_frustum(shape, 6, grid, dtype=torch.float32, long_run=12, seed=13)
    cells = cells.to(device)
    torch.library.opcheck(OPS.fused_splat_plan.default, (cells, list(grid)))
    plan = splat_plan(cells, grid)
    d = depth.to(device).requires_grad_()
    x = context.to(device).requires_grad_()
    torch.library.opcheck(OPS.fused_splat.default, (d, x, *plan[:4], list(grid)))
    grad_out = torch.randn(2, 6, 2, 5, 4, device=device, requires_grad=True)
    torch.library.opcheck(OPS.fused_splat_backward.default, (grad_out, d, x, *plan[:4], list(grid)))


def test_torch_compile(device):
    grid, shape, c = (6, 5, 1), (2, 2, 4, 3, 3), 8
    depth, context, cells = make_frustum(shape, c, grid, dtype=torch.float32, seed=17)
    depth, context, cells = depth.to(device), context.to(device), cells.to(device)

    def splat_energy(d, x):
        bev = fused_splat(d.softmax(2), torch.relu(x), splat_plan(cells, grid))  # B x C x Z x X x Y
        return (bev.sum(1) ** 2).mean()

    torch._dynamo.reset()
    compiled = torch.compile(splat_energy, fullgraph=True, backend="inductor")
    a = [t.clone().requires_grad_() for t in (depth, context)]
    b = [t.clone().requires_grad_() for t in (depth, context)]
    e1, e2 = compiled(*a), splat_energy(*b)
    e1.backward()
    e2.backward()
    torch.testing.assert_close(e1, e2)
    for g1, g2 in zip(a, b, strict=True):
        torch.testing.assert_close(g1.grad, g2.grad)


def test_plan_is_reusable_and_movable():
    grid, shape = (8, 8, 1), (2, 3, 5, 2, 4)
    depth, context, cells = make_frustum(shape, 6, grid, dtype=torch.float32, seed=19)
    plan = splat_plan(cells, grid)
    first = fused_splat(depth, context, plan)
    again = fused_splat(depth * 2, context, plan)  # same geometry, other features
    assert torch.equal(again, fused_splat(depth * 2, context, splat_plan(cells, grid)))
    assert torch.equal(first, fused_splat(depth, context, plan.to("cpu")))


# GPU only: the CPU's bits, a CUDA graph, repeatable runs. Skipped without a GPU.
gpu_only = pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_built()), reason="needs a GPU and a FORCE_CUDA=1 build"
)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("c", [1, 33, 64, 80])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_gpu_equals_cpu_bitwise(dtype, c, index_dtype):
    grid, shape = (24, 20, 2), (2, 6, 30, 4, 11)
    depth, context, cells = make_frustum(
        shape, c, grid, dtype=dtype, index_dtype=index_dtype, long_run=700, seed=c
    )
    plan_cpu, plan_gpu = splat_plan(cells, grid), splat_plan(cells.cuda(), grid)
    for a, b in zip(plan_cpu[:4], plan_gpu[:4], strict=True):
        assert torch.equal(a, b.cpu())
    out_cpu = fused_splat(depth, context, plan_cpu)
    out_gpu = fused_splat(depth.cuda(), context.cuda(), plan_gpu)
    assert torch.equal(out_gpu.cpu(), out_cpu)
    grad_out = torch.randn(out_cpu.shape, dtype=torch.float64).to(dtype)
    g_cpu = OPS.fused_splat_backward(grad_out, depth, context, *plan_cpu[:4], list(grid))
    g_gpu = OPS.fused_splat_backward(
        grad_out.cuda(), depth.cuda(), context.cuda(), *plan_gpu[:4], list(grid)
    )
    for a, b in zip(g_cpu, g_gpu, strict=True):
        assert torch.equal(b.cpu(), a)


@pytest.mark.gpu
@gpu_only
def test_gpu_forward_replays_in_a_cuda_graph():
    grid, shape, c = (32, 32, 1), (2, 6, 20, 4, 11), 64
    depth, context, cells = make_frustum(shape, c, grid, dtype=torch.float32, long_run=500, seed=4)
    depth, context, cells = depth.cuda(), context.cuda(), cells.cuda()
    plan = splat_plan(cells, grid)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as graph capture requires
        fused_splat(depth, context, plan)
        splat_plan(cells, grid)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_splat(depth, context, splat_plan(cells, grid))
    want = fused_splat_reference(depth.cpu(), context.cpu(), cells.cpu(), grid)
    for scale in (1.0, 3.0):  # the replay reads the inputs' current values
        depth.copy_(depth * scale)
        graph.replay()
        torch.cuda.synchronize()
        want = want * scale
        torch.testing.assert_close(out.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@gpu_only
def test_gpu_deterministic_runs():
    grid, shape, c = (64, 64, 1), (2, 6, 41, 8, 22), 64
    depth, context, cells = make_frustum(shape, c, grid, dtype=torch.float32, long_run=2000, seed=6)
    depth, context, cells = depth.cuda(), context.cuda(), cells.cuda()
    grad_out = torch.randn(2, c, 1, 64, 64, device="cuda")
    runs = []
    for _ in range(3):
        plan = splat_plan(cells, grid)
        out = fused_splat(depth, context, plan)
        runs.append(
            (out, *OPS.fused_splat_backward(grad_out, depth, context, *plan[:4], list(grid)))
        )
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.slow
@gpu_only
def test_gpu_output_past_2_31_elements():
    """Offsets past 2^31 (int64 indexing): out [2, 128, 1, 3000, 3000] fp16, 2.3e9 elements."""
    grid, shape, c = (3000, 3000, 1), (2, 2, 8, 4, 4), 128
    depth, context, cells = make_frustum(shape, c, grid, dtype=torch.float16, outside=0.1, seed=8)
    plan = splat_plan(cells.cuda(), grid)
    out = fused_splat(depth.cuda(), context.cuda(), plan)  # B x C x 1 x X x Y
    # The expected sums, cell by cell, in float64 over the few points.
    ranks = plan.ranks.cpu().flatten()
    inside = ranks < 2 * grid[0] * grid[1]
    feats = (depth.double().unsqueeze(-1) * context.double().unsqueeze(2)).reshape(-1, c)
    hit, slot = torch.unique(ranks[inside], return_inverse=True)
    sums = torch.zeros(hit.numel(), c, dtype=torch.float64).index_add_(0, slot, feats[inside])
    b, v = hit // (grid[0] * grid[1]), hit % (grid[0] * grid[1])
    got = out.view(2, c, -1).permute(0, 2, 1)[b.cuda(), v.cuda()].cpu().double()  # hits x C
    torch.testing.assert_close(got, sums, rtol=2e-3, atol=2e-3)
    total = out.float().sum(dtype=torch.float64).item()  # nothing written anywhere else
    assert abs(total - sums.sum().item()) < 1e-2 * max(1.0, abs(sums.sum().item()))
    grad_out = torch.randn(out.shape, device="cuda", dtype=torch.float16)
    g_depth, g_context = OPS.fused_splat_backward(
        grad_out, depth.cuda(), context.cuda(), *plan[:4], list(grid)
    )
    rows = grad_out.view(2, c, -1).permute(0, 2, 1)  # B x (X Y) x C, a view
    pb = torch.arange(2).repeat_interleave(ranks.numel() // 2)
    g = torch.zeros(ranks.numel(), c, dtype=torch.float64)
    g[inside] = rows[pb[inside].cuda(), (ranks[inside] % (grid[0] * grid[1])).cuda()].cpu().double()
    want_depth = (g.view(*shape, c) * context.double().unsqueeze(2)).sum(-1)
    want_context = (g.view(*shape, c) * depth.double().unsqueeze(-1)).sum(2)
    torch.testing.assert_close(g_depth.cpu().double(), want_depth, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(g_context.cpu().double(), want_context, rtol=2e-2, atol=2e-2)

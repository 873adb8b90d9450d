"""bev_pool against its plain-torch reference: values, gradients, edge cases, registration."""

import itertools

import pytest
import torch

from bev_reid.ops import bev_pool, bev_pool_reference, cuda_built


def make_points(
    n, c, batch, grid, *, dtype=torch.float64, index_dtype=torch.int64, outside=0.2, seed=0
):
    """Random features and coords; a share `outside` of points lies out of the grid or batch."""
    g = torch.Generator().manual_seed(seed)
    x_n, y_n, z_n = grid
    feats = torch.randn(n, c, generator=g, dtype=torch.float64).to(dtype)
    hi = torch.tensor([x_n, y_n, z_n, batch])
    coords = (torch.rand(n, 4, generator=g) * hi).long()
    bad = torch.rand(n, generator=g) < outside
    axis = torch.randint(0, 4, (n,), generator=g)
    shift = torch.where(
        torch.rand(n, generator=g) < 0.5, -1 - coords[torch.arange(n), axis], hi[axis]
    )
    coords[bad, axis[bad]] += shift[bad]
    return feats, coords.to(index_dtype)


SIZES = list(
    itertools.product(
        [0, 1, 257, 3000],  # points
        [1, 7, 64],  # channels
        [1, 3],  # batch
        [(1, 1, 1), (9, 6, 2), (32, 32, 1)],  # grid (X, Y, Z)
    )
)


@pytest.mark.parametrize("n,c,batch,grid", SIZES)
def test_forward_matches_reference(device, n, c, batch, grid):
    feats, coords = make_points(n, c, batch, grid, seed=n + c)
    out = bev_pool(feats.to(device), coords.to(device), batch, grid)
    ref = bev_pool_reference(feats, coords, batch, grid)
    assert out.shape == (batch, c, grid[2], grid[0], grid[1])
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)]
)
def test_dtypes(device, dtype, tol, index_dtype):
    grid, batch = (16, 12, 2), 2
    feats64, coords = make_points(4000, 24, batch, grid, index_dtype=index_dtype, seed=3)
    feats = feats64.to(dtype)
    out = bev_pool(feats.to(device), coords.to(device), batch, grid)
    assert out.dtype == dtype
    ref = bev_pool_reference(
        feats.double(), coords, batch, grid
    )  # exact sums of the rounded inputs
    scale = ref.abs().max()
    assert ((out.cpu().double() - ref).abs().max() / scale) < tol


def test_grad_matches_reference(device):
    grid, batch = (10, 8, 3), 2
    feats, coords = make_points(2000, 16, batch, grid, seed=5)
    weight = torch.randn(batch, 16, grid[2], grid[0], grid[1], dtype=torch.float64)
    f1 = feats.clone().to(device).requires_grad_()
    (bev_pool(f1, coords.to(device), batch, grid) * weight.to(device)).sum().backward()
    f2 = feats.clone().requires_grad_()
    (bev_pool_reference(f2, coords, batch, grid) * weight).sum().backward()
    torch.testing.assert_close(f1.grad.cpu(), f2.grad, rtol=1e-10, atol=1e-12)
    # Exactly: each point's gradient is the weight of its voxel, and zero for dropped points.
    x, y, z, b = coords.unbind(1)
    outside = (
        (x < 0)
        | (x >= grid[0])
        | (y < 0)
        | (y >= grid[1])
        | (z < 0)
        | (z >= grid[2])
        | (b < 0)
        | (b >= batch)
    )
    expected = torch.zeros_like(feats)
    k = ~outside
    expected[k] = weight[b[k], :, z[k], x[k], y[k]]
    assert outside.any() and torch.equal(f1.grad.cpu(), expected)


def test_gradcheck_and_gradgradcheck(device):
    grid, batch = (4, 3, 2), 2
    feats, coords = make_points(60, 3, batch, grid, seed=7)
    feats = feats.to(device).requires_grad_()
    coords = coords.to(device)
    fn = lambda f: bev_pool(f, coords, batch, grid)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (feats,))
    assert torch.autograd.gradgradcheck(fn, (feats,))


def test_all_points_outside(device):
    feats = torch.randn(50, 4, dtype=torch.float64, device=device)
    coords = torch.tensor(
        [[-1, 0, 0, 0], [0, 5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]] * 12 + [[9, 9, 9, 9]] * 2
    )
    out = bev_pool(feats, coords.to(device), 2, (3, 5, 1))
    assert out.shape == (2, 4, 1, 3, 5) and (out == 0).all()


def test_many_points_in_one_voxel_and_duplicates(device):
    feats = torch.randn(5000, 8, dtype=torch.float64)
    coords = torch.tensor([[2, 1, 0, 1]]).repeat(5000, 1)
    out = bev_pool(feats.to(device), coords.to(device), 2, (4, 3, 1)).cpu()
    torch.testing.assert_close(out[1, :, 0, 2, 1], feats.sum(0))
    rest = out.clone()
    rest[1, :, 0, 2, 1] = 0
    assert (rest == 0).all()  # nothing anywhere else
    # The same point twice counts twice.
    twice = bev_pool(
        torch.cat([feats[:1], feats[:1]]).to(device), coords[:2].to(device), 2, (4, 3, 1)
    )
    torch.testing.assert_close(twice[1, :, 0, 2, 1].cpu(), 2 * feats[0])


def test_empty_batch_and_empty_points(device):
    out = bev_pool(
        torch.randn(0, 5, device=device),
        torch.zeros(0, 4, dtype=torch.long, device=device),
        2,
        (3, 3, 1),
    )
    assert out.shape == (2, 5, 1, 3, 3) and (out == 0).all()
    out = bev_pool(
        torch.randn(4, 5, device=device),
        torch.zeros(4, 4, dtype=torch.long, device=device),
        0,
        (3, 3, 1),
    )
    assert out.shape == (0, 5, 1, 3, 3)


def test_deterministic_across_runs_and_threads():
    feats, coords = make_points(20000, 32, 2, (40, 40, 1), dtype=torch.float32, seed=11)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = bev_pool(feats, coords, 2, (40, 40, 1))
        torch.set_num_threads(max(2, threads))
        many = bev_pool(feats, coords, 2, (40, 40, 1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    assert torch.equal(many, bev_pool(feats, coords, 2, (40, 40, 1)))


@pytest.mark.parametrize(
    "feats,coords,batch,grid,match",
    [
        (
            torch.randn(5, 3),
            torch.zeros(5, 3, dtype=torch.long),
            1,
            (2, 2, 1),
            r"coords must be \[N, 4\]",
        ),
        (
            torch.randn(5, 3),
            torch.zeros(4, 4, dtype=torch.long),
            1,
            (2, 2, 1),
            "coords has 4 rows but feats has 5",
        ),
        (torch.randn(5, 3), torch.zeros(5, 4), 1, (2, 2, 1), "coords must be int32 or int64"),
        (
            torch.zeros(5, 3, dtype=torch.long),
            torch.zeros(5, 4, dtype=torch.long),
            1,
            (2, 2, 1),
            "feats must be a floating",
        ),
        (
            torch.randn(5),
            torch.zeros(5, 4, dtype=torch.long),
            1,
            (2, 2, 1),
            r"feats must be \[N, C\]",
        ),
        (
            torch.randn(5, 3),
            torch.zeros(5, 4, dtype=torch.long),
            1,
            (2, 0, 1),
            "every grid size must be > 0",
        ),
        (
            torch.randn(5, 3),
            torch.zeros(5, 4, dtype=torch.long),
            -1,
            (2, 2, 1),
            "batch_size must be >= 0",
        ),
    ],
)
def test_bad_input(feats, coords, batch, grid, match):
    with pytest.raises(RuntimeError, match=match):
        bev_pool(feats, coords, batch, grid)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_is_refused_up_front(device, dtype):
    feats = torch.randn(6, 3).to(dtype).to(device)
    coords = torch.zeros(6, 4, dtype=torch.long, device=device)
    with pytest.raises(RuntimeError, match=r"feats must be a floating tensor \(float32, float64"):
        bev_pool(feats, coords, 1, (2, 2, 1))
    grad_out = torch.zeros(1, 3, 1, 2, 2).to(dtype).to(device)
    with pytest.raises(RuntimeError, match=r"grad_out must be a floating tensor \(float32"):
        torch.ops.bev_reid.bev_pool_backward(grad_out, coords, 1, [2, 2, 1])


def test_bad_grid_length():
    with pytest.raises(ValueError, match=r"grid must be \(X, Y, Z\)"):
        bev_pool(torch.randn(5, 3), torch.zeros(5, 4, dtype=torch.long), 1, (2, 2))


def test_opcheck(device):
    feats, coords = make_points(300, 6, 2, (5, 4, 2), dtype=torch.float32, seed=13)
    feats = feats.to(device).requires_grad_()
    torch.library.opcheck(
        torch.ops.bev_reid.bev_pool.default, (feats, coords.to(device), 2, [5, 4, 2])
    )
    grad_out = torch.randn(2, 6, 2, 5, 4, device=device)
    torch.library.opcheck(
        torch.ops.bev_reid.bev_pool_backward.default, (grad_out, coords.to(device), 2, [5, 4, 2])
    )


def test_torch_compile(device):
    grid, batch = (6, 5, 1), 2
    feats, coords = make_points(400, 8, batch, grid, dtype=torch.float32, seed=17)
    feats, coords = feats.to(device), coords.to(device)
    weight = torch.randn(8, device=device)

    def splat_energy(f):
        bev = bev_pool(torch.relu(f) * weight, coords, batch, grid)  # B x C x Z x X x Y
        return (bev.sum(1) ** 2).mean()

    torch._dynamo.reset()
    compiled = torch.compile(splat_energy, fullgraph=True, backend="inductor")
    f1 = feats.clone().requires_grad_()
    f2 = feats.clone().requires_grad_()
    e1, e2 = compiled(f1), splat_energy(f2)
    e1.backward()
    e2.backward()
    torch.testing.assert_close(e1, e2)
    torch.testing.assert_close(f1.grad, f2.grad)


# GPU only: the CPU's bits (both sum a voxel's points in pieces cut at the same sorted positions)
# and a forward with no host sync, so that it can be captured in a CUDA graph.
gpu_only = pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_built()), reason="needs a GPU and a FORCE_CUDA=1 build"
)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("c", [1, 33, 80])
def test_gpu_equals_cpu_bitwise(dtype, c):
    grid, batch = (40, 30, 2), 2
    feats, coords = make_points(50000, c, batch, grid, dtype=dtype, seed=c)
    coords[:3000, :4] = torch.tensor([5, 7, 1, 1])  # a run of 3000 points: many chunk boundaries
    out_cpu = bev_pool(feats, coords, batch, grid)
    out_gpu = bev_pool(feats.cuda(), coords.cuda(), batch, grid)
    assert torch.equal(out_gpu.cpu(), out_cpu)
    grad_out = torch.randn(out_cpu.shape, dtype=torch.float64).to(dtype)
    backward = torch.ops.bev_reid.bev_pool_backward
    want = backward(grad_out, coords, batch, list(grid))
    assert torch.equal(backward(grad_out.cuda(), coords.cuda(), batch, list(grid)).cpu(), want)


@pytest.mark.gpu
@gpu_only
def test_gpu_forward_replays_in_a_cuda_graph():
    grid, batch = (32, 32, 1), 2
    feats, coords = make_points(20000, 16, batch, grid, dtype=torch.float32, seed=23)
    feats, coords = feats.cuda(), coords.cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as graph capture requires
        bev_pool(feats, coords, batch, grid)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = bev_pool(feats, coords, batch, grid)
    for scale in (1.0, -2.0):  # the replay reads the inputs' current values
        feats.mul_(scale)
        graph.replay()
        torch.cuda.synchronize()
        want = bev_pool_reference(feats.cpu(), coords.cpu(), batch, grid)
        torch.testing.assert_close(out.cpu(), want, rtol=1e-5, atol=1e-5)

"""ReID net and heads: shapes, hand-computed losses, a training smoke, registry, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F

from bev_reid.engine.checkpoint import CheckpointError, save_checkpoint
from bev_reid.models.heads import (
    BatchHardTripletHead,
    CosineSoftmaxHead,
    HeadOutput,
    build_head,
    list_heads,
)
from bev_reid.models.reid import BEVReIDModel, ReIDNet


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are small: on a busy 2-core machine two OpenMP threads wait on each other far
    longer than they save (the training smoke took 80 s instead of 7 s), so run on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- net shapes
@pytest.mark.parametrize("channels", [3, 64, 67])
@pytest.mark.parametrize("size", [16, 24, 32])
def test_net_gives_unit_norm_embeddings_for_any_crop_size(channels, size):
    torch.manual_seed(0)
    net = ReIDNet(channels).eval()
    with torch.no_grad():
        emb = net(torch.randn(1, channels, size, size))
    assert emb.shape == (1, 128)
    assert torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))


def test_net_layout_and_input_check():
    net = ReIDNet(4, embedding_dim=32, widths=(16, 24, 48))
    # stem width 16, then one block at 16 and two blocks per further width
    assert [b.conv2.out_channels for b in net.blocks] == [16, 24, 24, 48, 48]
    assert net.fc.in_features == 48 * 6 * 6 and net.fc.out_features == 32  # a 6 x 6 grid kept
    assert (
        ReIDNet(4, embedding_dim=32, widths=(16, 24, 48), pool=1).fc.in_features == 48
    )  # global average
    with pytest.raises(ValueError, match=r"\[N, 4, S, S\]"):
        net(torch.randn(2, 3, 24, 24))


def test_embed_is_gradient_free_single_crop_and_restores_the_mode():
    torch.manual_seed(0)
    model = BEVReIDModel(4, num_classes=3).train()
    crops = torch.randn(2, 4, 24, 24)
    emb = model.embed(crops[:1])  # batch 1 only works with BatchNorm in eval mode
    assert emb.shape == (1, 128) and not emb.requires_grad
    assert model.training  # put back
    # eval-mode embeddings do not depend on the rest of the batch (no dropout, running stats)
    torch.testing.assert_close(model.embed(crops)[:1], emb)


# ----------------------------------------------------------------------------- cosine softmax
def test_cosine_softmax_matches_a_hand_computation():
    head = CosineSoftmaxHead(embedding_dim=3, num_classes=2).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
        head.scale_param.fill_(0.5)
    emb = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 4.0]], dtype=torch.float64)
    labels = torch.tensor([1, 1])

    out = head(emb, labels)

    scale = math.log1p(math.exp(0.5))  # softplus(0.5)
    cos = [[1.0, 1.0 / math.sqrt(2)], [0.0, 0.6 / math.sqrt(2)]]  # by hand from the unit vectors
    expected = torch.tensor([[scale * c for c in row] for row in cos], dtype=torch.float64)
    torch.testing.assert_close(out.logits, expected)
    ce = [math.log(sum(math.exp(scale * c) for c in row)) - scale * row[1] for row in cos]
    torch.testing.assert_close(out.loss, torch.tensor(sum(ce) / 2, dtype=torch.float64))
    assert out.accuracy.item() == pytest.approx(0.5)  # row 0 picks class 0, row 1 class 1
    assert out.extra["scale"].item() == pytest.approx(scale)

    # d loss / d scale_param = sigmoid(p) * mean_n sum_k (softmax_nk - onehot_nk) * cos_nk
    out.loss.backward()
    dscale = 0.0
    for row, y in zip(cos, [1, 1], strict=True):
        z = [math.exp(scale * c) for c in row]
        dscale += sum(
            (zk / sum(z) - (k == y)) * c for k, (zk, c) in enumerate(zip(z, row, strict=True))
        )
    expected_grad = dscale / 2 / (1 + math.exp(-0.5))
    assert head.scale_param.grad is not None
    assert head.scale_param.grad.item() == pytest.approx(expected_grad, rel=1e-9)
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()


def test_cosine_softmax_start_scale():
    head = CosineSoftmaxHead(8, 4, init_scale=3.0)
    assert head.scale.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="init_scale"):
        CosineSoftmaxHead(8, 4, init_scale=0.0)


# ----------------------------------------------------------------------------- triplet
def loop_batch_hard(emb, labels, margin):
    """Plain reference: per anchor, loop over the batch for the hardest positive / negative."""
    terms, correct = [], 0
    n = len(labels)
    for i in range(n):
        d_pos = [
            torch.linalg.vector_norm(emb[i] - emb[j])
            for j in range(n)
            if j != i and labels[j] == labels[i]
        ]
        d_neg = [
            torch.linalg.vector_norm(emb[i] - emb[j]) for j in range(n) if labels[j] != labels[i]
        ]
        if not d_pos or not d_neg:
            continue
        hp, hn = max(d_pos), min(d_neg)
        gap = hp - hn
        terms.append(
            torch.log1p(torch.exp(gap)) if margin is None else torch.clamp(gap + margin, min=0)
        )
        correct += int(hp < hn)
    return torch.stack(terms).mean(), correct / len(terms)


@pytest.mark.parametrize("margin", [0.3, 1.0, None])
def test_batch_hard_triplet_matches_a_loop(margin):
    torch.manual_seed(1)
    P, K = 4, 3
    labels = torch.arange(P).repeat_interleave(K)[torch.randperm(P * K)]  # views not grouped
    raw = torch.randn(P * K, 8, dtype=torch.float64, requires_grad=True)
    ref_raw = raw.detach().clone().requires_grad_()

    out = BatchHardTripletHead(margin=margin)(F.normalize(raw, dim=1), labels)
    ref_loss, ref_acc = loop_batch_hard(F.normalize(ref_raw, dim=1), labels.tolist(), margin)

    assert out.logits is None
    torch.testing.assert_close(out.loss, ref_loss)
    assert out.accuracy.item() == pytest.approx(ref_acc)
    out.loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(raw.grad, ref_raw.grad)


def test_batch_hard_triplet_skips_anchors_without_positive_or_negative():
    torch.manual_seed(2)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])  # identity 2 has one view: no positive
    emb = F.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    out = BatchHardTripletHead(margin=0.5)(emb, labels)
    ref_loss, _ = loop_batch_hard(emb, labels.tolist(), 0.5)
    torch.testing.assert_close(out.loss, ref_loss)

    one_identity = BatchHardTripletHead()(emb.requires_grad_(), torch.zeros(6, dtype=torch.long))
    assert one_identity.loss.item() == 0.0
    one_identity.loss.backward()  # still a graph, with a zero gradient
    assert torch.equal(emb.grad, torch.zeros_like(emb))


# ----------------------------------------------------------------------------- training smoke
P_IDS, C_TOY, S_TOY, NOISE = 6, 4, 24, 3.0


def toy_views(patterns, k, gen):
    """k noisy views of each identity's pattern: crops [P * k, C, S, S], labels [P * k]."""
    x = patterns.repeat_interleave(k, 0)
    labels = torch.arange(len(patterns)).repeat_interleave(k)
    return x + NOISE * torch.randn(x.shape, generator=gen), labels


def nn_accuracy(model, patterns):
    """Leave-one-out nearest neighbour (cosine) accuracy on 5 fresh views per identity."""
    crops, labels = toy_views(patterns, 5, torch.Generator().manual_seed(99))
    emb = model.embed(crops)
    sim = emb @ emb.t()
    sim.fill_diagonal_(-2.0)
    return (labels[sim.argmax(1)] == labels).float().mean().item()


# The triplet smoke runs without dropout: with dropout 0.6 batch-hard mining picks dropout noise
# as the hardest pair and the loss barely moves in 60 steps (it does learn over a few hundred).
@pytest.mark.parametrize(
    "head, dropout, min_accuracy",
    [("cosine-softmax", 0.6, 0.9), ("triplet", 0.0, 0.8)],
)
def test_training_separates_toy_identities(head, dropout, min_accuracy):
    gen = torch.Generator().manual_seed(0)
    patterns = torch.randn(P_IDS, C_TOY, S_TOY, S_TOY, generator=gen)
    torch.manual_seed(0)
    model = BEVReIDModel(C_TOY, dropout=dropout, head=head, num_classes=P_IDS)
    before = nn_accuracy(model, patterns)
    assert before < 0.6, "the toy problem is too easy to show learning"

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(60):
        crops, labels = toy_views(patterns, 3, gen)  # P = 6 identities x K = 3 views
        out = model(crops, labels)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())

    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"{head}: loss {first:.3f} -> {last:.3f}"
    after = nn_accuracy(model, patterns)
    assert after > min_accuracy, f"{head}: nearest-neighbour accuracy {before:.2f} -> {after:.2f}"


# ----------------------------------------------------------------------------- registry
def test_unknown_head_lists_the_valid_names():
    with pytest.raises(KeyError) as err:
        build_head("nope", embedding_dim=8, num_classes=3)
    assert "cosine-softmax" in str(err.value) and "triplet" in str(err.value)


def test_registry_holds_the_documented_heads():
    assert {"cosine-softmax", "triplet"} <= set(list_heads())


@pytest.mark.parametrize("name", list_heads())
def test_every_registered_head_gives_a_finite_loss_with_gradients(name):
    torch.manual_seed(0)
    head = build_head(name, embedding_dim=16, num_classes=5)
    emb = F.normalize(torch.randn(10, 16), dim=1).requires_grad_()
    labels = torch.arange(5).repeat_interleave(2)  # P = 5 x K = 2

    out = head(emb, labels)

    assert isinstance(out, HeadOutput)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert 0.0 <= out.accuracy.item() <= 1.0 and not out.accuracy.requires_grad
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.extra.values())
    out.loss.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


# ----------------------------------------------------------------------------- checkpoints
def _perturbed_model(**kwargs):
    torch.manual_seed(0)
    model = BEVReIDModel(4, embedding_dim=16, widths=(8, 16), **kwargs)
    with torch.no_grad():  # make running statistics and weights differ from a fresh build
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(0.1 * torch.rand_like(t))
            elif "num_batches" in name:
                t.fill_(5)
    return model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head": "cosine-softmax", "num_classes": 7},
        {"head": "triplet", "head_kwargs": {"margin": None}},
    ],
)
def test_from_checkpoint_round_trip(tmp_path, kwargs):
    model = _perturbed_model(**kwargs)
    crops = torch.randn(3, 4, 24, 24)
    expected = model.embed(crops)
    path = save_checkpoint(tmp_path, 7, model, meta={"kind": "reid", "model": model.config})

    loaded = BEVReIDModel.from_checkpoint(path)

    assert not loaded.training
    assert loaded.config == model.config
    assert type(loaded.head) is type(model.head)
    assert torch.equal(loaded.embed(crops), expected)
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    assert torch.equal(BEVReIDModel.from_checkpoint(tmp_path).embed(crops), expected)  # folder


def test_from_checkpoint_refuses_other_checkpoints(tmp_path):
    model = _perturbed_model(num_classes=3)
    lss = save_checkpoint(tmp_path / "a", 1, model, meta={"kind": "lss", "model": model.config})
    with pytest.raises(CheckpointError, match="not a ReID checkpoint.*'lss'"):
        BEVReIDModel.from_checkpoint(lss)

    bare = save_checkpoint(tmp_path / "b", 1, model, meta={"kind": "reid"})
    with pytest.raises(CheckpointError, match=r"meta\['model'\]"):
        BEVReIDModel.from_checkpoint(bare)

    wrong = dict(model.config, in_channels=5)  # weights of a 4-channel net
    misfit = save_checkpoint(tmp_path / "c", 1, model, meta={"kind": "reid", "model": wrong})
    with pytest.raises(CheckpointError, match="do not fit"):
        BEVReIDModel.from_checkpoint(misfit)

    unknown = dict(model.config, colour="red")
    odd = save_checkpoint(tmp_path / "d", 1, model, meta={"kind": "reid", "model": unknown})
    with pytest.raises(CheckpointError, match="cannot build"):
        BEVReIDModel.from_checkpoint(odd)

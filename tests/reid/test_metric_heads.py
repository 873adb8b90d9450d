"""The heads added for few training identities, against plain per-view loops written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bev_reid.models.heads import build_head


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])  # identity 4 has no positive
    return emb, labels


def test_cosine_margin_against_a_loop():
    emb, labels = batch()
    head = build_head("cosine-margin", embedding_dim=8, num_classes=5, margin=0.25)
    out = head(emb, labels)
    w = F.normalize(head.weight.detach(), dim=1)
    s = head.scale.item()
    total = 0.0
    for e, y in zip(emb.tolist(), labels.tolist(), strict=True):
        z = [s * (sum(a * b for a, b in zip(e, row, strict=True)) - (0.25 if k == y else 0.0))
             for k, row in enumerate(w.tolist())]  # fmt: skip
        total += math.log(sum(math.exp(v) for v in z)) - z[y]
    assert out.loss.item() == pytest.approx(total / len(labels), rel=1e-5)
    # The margin only adds to the loss of the plain cosine softmax with the same weights.
    plain = build_head("cosine-softmax", embedding_dim=8, num_classes=5)
    plain.load_state_dict(head.state_dict())
    assert plain(emb, labels).loss.item() < out.loss.item()


def test_supervised_contrastive_term_against_a_loop():
    emb, labels = batch(1)
    head = build_head("cosine-supcon", embedding_dim=8, num_classes=5, temperature=0.2)
    out = head(emb, labels)
    ce = build_head("cosine-softmax", embedding_dim=8, num_classes=5)
    ce.load_state_dict(head.state_dict())
    terms = []
    n = len(labels)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        denom = sum(math.exp(float(emb[i] @ emb[j]) / 0.2) for j in others)
        pos = [j for j in others if labels[j] == labels[i]]
        if pos:
            terms.append(
                -sum(float(emb[i] @ emb[p]) / 0.2 - math.log(denom) for p in pos) / len(pos)
            )
    want = sum(terms) / len(terms)
    assert out.extra["supcon"].item() == pytest.approx(want, rel=1e-5)
    assert out.loss.item() == pytest.approx(ce(emb, labels).loss.item() + want, rel=1e-5)


def test_bad_head_settings():
    with pytest.raises(ValueError, match="margin >= 0"):
        build_head("cosine-margin", embedding_dim=8, num_classes=5, margin=-0.1)
    with pytest.raises(ValueError, match="temperature > 0"):
        build_head("cosine-supcon", embedding_dim=8, num_classes=5, temperature=0.0)

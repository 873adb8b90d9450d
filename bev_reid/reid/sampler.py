"""P identities x K views per batch, each batch a pure function of (seed, step, rank).

The metric heads need several views of every identity in a batch: the batch-hard triplet loss
has no positive otherwise, and the cosine softmax learns faster from them. A batch of step ``s``
is drawn afresh from ``numpy.random.default_rng`` seeded with ``(seed, s)`` (the identities) and
``(seed, s, rank)`` (the views), so there is no sampler state to save: a run resumed at step
``s`` draws exactly the batches the uninterrupted run would have drawn, and no epoch is needed.

With several processes, step ``s`` draws one permutation of the identities shared by all ranks,
and rank ``r`` takes the ``r``-th run of P identities from it: the ranks see different identities
whenever ``P x world_size`` does not exceed the number of identities (else they wrap around).

Neighbour batches (``neighbours`` > 0, with each view's keyframe and place): the first identity
of a batch is an anchor; one of its views is drawn, and that share of the other P - 1 identities
are the vehicles nearest to it in the same keyframe (the rest come from the permutation as
before). A tracker confuses a vehicle with its neighbours, seen in the same light and weather;
random batches rarely hold them. With several processes each rank has its own anchor, but
their neighbours may be the same vehicles: on the dataset of ``configs/track-reid.yaml`` (531
training identities), 0.2 of a step's 16 identities on average with 2 ranks, 0.9 of 32 with 4.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[int]]):
    """Batches of P identities x K views, as dataset positions, for ``DataLoader(batch_sampler=)``.

    A batch lists the K views of its first identity, then those of the second, ... (P x K
    positions). An identity with fewer than K views is sampled with replacement; P is capped at
    the number of identities.

    Args:
        ids: [N] identity of each dataset position (any integers).
        p: identities per batch.
        k: views per identity.
        seed: seed of the draws.
        rank: this process's rank.
        world_size: number of processes.
        start_step: the step of the first batch yielded (a resumed run's step).
        num_steps: batches to yield; None for an endless sampler.
        places: [N] (keyframe, x, y) of each dataset position; needed when ``neighbours`` > 0.
        neighbours: share of the P - 1 identities after the anchor drawn as its nearest
            neighbours in one of its keyframes (0: none; 1: all of them, as far as that
            keyframe holds other vehicles, the rest at random).
    """

    def __init__(
        self,
        ids: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        num_steps: int | None = None,
        places: Sequence[tuple[str, float, float]] | None = None,
        neighbours: float = 0.0,
    ):
        if p < 1 or k < 1:
            raise ValueError(f"PKBatchSampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        ids_np = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids_np.size == 0:
            raise ValueError("PKBatchSampler got no views to sample from")
        order = np.argsort(ids_np, kind="stable")
        self.identities, start, count = np.unique(
            ids_np[order], return_index=True, return_counts=True
        )
        # Views of identity j: positions order[start[j] : start[j] + count[j]].
        self._views = [order[s : s + n] for s, n in zip(start, count, strict=True)]
        self.p = min(int(p), len(self._views))
        self.k = int(k)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start_step = int(start_step)
        self.num_steps = None if num_steps is None else int(num_steps)
        if not 0.0 <= neighbours <= 1.0:
            raise ValueError(f"neighbours must be a share in [0, 1], got {neighbours}")
        self.neighbours = float(neighbours)
        self._places: list[tuple[str, float, float]] | None = None
        self._keyframes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.neighbours > 0:
            if places is None or len(places) != ids_np.size:
                raise ValueError("neighbour batches need the keyframe and place of every view")
            self._places = [(str(k), float(x), float(y)) for k, x, y in places]
            # keyframe -> (identity numbers j, [n, 2] places) of the views it holds
            index_of = np.searchsorted(self.identities, ids_np)  # position -> identity number
            rows: dict[str, list[tuple[int, float, float]]] = {}
            for pos, (key, x, y) in enumerate(self._places):
                rows.setdefault(key, []).append((int(index_of[pos]), x, y))
            self._keyframes = {
                key: (np.array([r[0] for r in rs]), np.array([r[1:] for r in rs]))
                for key, rs in rows.items()
            }

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def batch(self, step: int) -> list[int]:
        """The P x K dataset positions of ``step`` for this rank."""
        n = len(self._views)
        perm = np.random.default_rng([self.seed, step]).permutation(n)
        first = self.rank * self.p
        chosen = perm[(first + np.arange(self.p)) % n]  # P identities, distinct
        rng = np.random.default_rng([self.seed, step, self.rank])
        if self.neighbours > 0 and self.p > 1:
            chosen = self._with_neighbours(chosen, perm, rng)
        out: list[int] = []
        for j in chosen:
            views = self._views[j]
            picks = rng.choice(views.size, size=self.k, replace=views.size < self.k)
            out.extend(int(i) for i in views[picks])
        return out

    def _with_neighbours(
        self, chosen: np.ndarray, perm: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """``chosen`` with its first identity kept and a share of the rest replaced by that
        identity's nearest neighbours in the keyframe of one of its views."""
        anchor = int(chosen[0])
        assert self._places is not None
        key, x, y = self._places[int(rng.choice(self._views[anchor]))]
        who, where = self._keyframes[key]
        order = np.argsort(np.hypot(where[:, 0] - x, where[:, 1] - y), kind="stable")
        want = int(round(self.neighbours * (self.p - 1)))
        taken, near = {anchor}, []
        for j in map(int, who[order]):
            if len(near) == want:
                break
            if j not in taken:
                taken.add(j)
                near.append(j)
        rest = itertools.islice(
            (j for j in map(int, perm) if j not in taken), self.p - 1 - len(near)
        )
        return np.array([anchor, *near, *rest], dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless PKBatchSampler has no length (pass num_steps)")
        return self.num_steps

"""P identities x K views per batch, each batch a pure function of (seed, step, rank).

The metric heads need several views of every identity in a batch: the batch-hard triplet loss
has no positive otherwise, and the cosine softmax learns faster from them. A batch of step ``s``
is drawn afresh from ``numpy.random.default_rng`` seeded with ``(seed, s)`` (the identities) and
``(seed, s, rank)`` (the views), so there is no sampler state to save: a run resumed at step
``s`` draws exactly the batches the uninterrupted run would have drawn, and no epoch is needed.

With several processes, step ``s`` draws one permutation of the identities shared by all ranks,
and rank ``r`` takes the ``r``-th run of P identities from it: the ranks see different identities
whenever ``P x world_size`` does not exceed the number of identities (else they wrap around).
"""

from __future__ import annotations

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
        out: list[int] = []
        for j in chosen:
            views = self._views[j]
            picks = rng.choice(views.size, size=self.k, replace=views.size < self.k)
            out.extend(int(i) for i in views[picks])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless PKBatchSampler has no length (pass num_steps)")
        return self.num_steps

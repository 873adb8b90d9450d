"""k-reciprocal re-ranking (Zhong, Zheng, Cao & Li, "Re-ranking person re-identification with
k-reciprocal encoding", CVPR 2017), with memory that grows with the number of views, not its
square.

Written from the paper's formulas, over the N views that are query or gallery (each once), with
d(p, g) = 1 - cos(p, g), the cosine distance the plain protocol ranks by:

- N(p, k): p and its k nearest other views (p first, ties at the k-th neighbour as
  ``torch.topk`` breaks them);
- R(p, k) = {g in N(p, k) : p in N(g, k)}, the k-reciprocal neighbours (Eq. 3);
- R*(p, k1) = R(p, k1) united with every R(q, round(k1 / 2)), q in R(p, k1), that shares at least
  2/3 of its members with R(p, k1) (Eq. 4);
- V_p[g] = exp(-d(p, g)) for g in R*(p, k1), else 0 (Eq. 7);
- local query expansion: V_p <- the mean of V_g over the k2 views nearest p, p included (Eq. 10;
  k2 = 1: none);
- Jaccard distance d_J(p, g) = 1 - sum_j min(V_p[j], V_g[j]) / sum_j max(V_p[j], V_g[j]) (Eq. 9);
- final distance d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g) (Eq. 11).

Memory: the V rows are sparse (CSR; a row holds |R*| entries, about k1 to 3 k1, times up to k2
after the expansion), so the encoding costs O(N k1 k2), never N x N. The k-nearest neighbours come
from [chunk, N] similarity blocks; the min-sums of the Jaccard from an inverted index of the
gallery's V (column -> gallery rows), expanded for at most ``pair_budget`` (query entry, gallery
entry) pairs at a time. The [q, G] distance block is the ranking's own chunk
(:func:`bev_reid.reid.metrics.query_results`, ``scores``).

Shapes: N views, D embedding dims, Q queries, G gallery items, k1 / k2 neighbours.
"""

from __future__ import annotations

import torch

ROW_CHUNK = 256  # rows per step of the set building (the expansion compares [c, k1, k1/2, k1])
SIM_BUDGET = 64 * 2**20  # bytes of one [chunk, N] similarity block of the neighbour search
PAIR_BUDGET = 2**20  # (query entry, gallery entry) pairs expanded at once (~60 bytes each)


def nearest(emb: torch.Tensor, k: int, budget: int = SIM_BUDGET) -> torch.Tensor:
    """[N, k + 1] int64: each view first, then its k nearest others by cosine (descending).

    Args:
        emb: [N, D] L2-normalised embeddings.
        k: neighbours besides the view itself (at most N - 1).
    """
    n = emb.shape[0]
    chunk = max(1, budget // (4 * max(n, 1)))
    out = torch.empty(n, k + 1, dtype=torch.int64, device=emb.device)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sim = emb[s:e] @ emb.T  # c x N
        rows = torch.arange(s, e, device=emb.device)
        sim[rows - s, rows] = torch.inf  # each view is its own first neighbour
        out[s:e] = sim.topk(k + 1, dim=1).indices  # c x (k+1), descending
    return out


def reciprocal(nn: torch.Tensor, k: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R(p, k) of the views ``rows`` [c]: members [c, k + 1] and their mask [c, k + 1].

    Args:
        nn: [N, >= k + 1] neighbour table of :func:`nearest`.
    """
    cand = nn[rows, : k + 1]  # c x (k+1)
    back = nn[cand, : k + 1]  # c x (k+1) x (k+1)
    return cand, (back == rows[:, None, None]).any(-1)


def _dedup_rows(members: torch.Tensor, valid: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """Unique members of each row (invalid ones dropped): (row [m], col [m]) sorted by row, col."""
    x = torch.where(valid, members, n).sort(dim=1).values  # c x M, sentinel n last
    keep = x < n
    keep[:, 1:] &= x[:, 1:] != x[:, :-1]
    row = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(x)
    return row[keep], x[keep]


class KReciprocal:
    """The k-reciprocal encoding of N views and the re-ranked distances between them.

    Args:
        emb: [N, D] L2-normalised embeddings of every view that is query or gallery.
        k1: neighbours of the reciprocal sets (the paper's k1 = 20); capped at N - 1.
        k2: views averaged by the local query expansion (k2 = 6; 1 = none); capped at N.
        lam: weight of the original distance in the final one (lambda = 0.3).
        pair_budget: (query entry, gallery entry) pairs expanded at once.
    """

    def __init__(
        self, emb: torch.Tensor, k1: int = 20, k2: int = 6, lam: float = 0.3,
        pair_budget: int = PAIR_BUDGET,
    ) -> None:  # fmt: skip
        if k1 < 1 or k2 < 1 or not 0.0 <= lam <= 1.0:
            raise ValueError(
                f"re-ranking needs k1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lam}"
            )
        self.emb = emb.float()
        self.n = n = emb.shape[0]
        self.lam, self.pair_budget = float(lam), int(pair_budget)
        if n == 0:
            raise ValueError("re-ranking needs at least one view")
        self.k1, self.k2 = min(k1, n - 1), min(k2, n)
        self.half = round(self.k1 / 2)
        nn = nearest(self.emb, max(self.k1, self.k2 - 1))  # N x (max(k1, k2 - 1) + 1)
        self.crow, self.col, self.val = self._expand(nn, *self._encode(nn))
        counts = self.crow[1:] - self.crow[:-1]  # N
        self.row = torch.repeat_interleave(torch.arange(n, device=emb.device), counts)  # nnz
        self.row_sum = torch.zeros(n, device=emb.device).index_add_(0, self.row, self.val)  # N

    def _encode(self, nn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """V of Eq. 7 as (row [m], col [m], val [m]), sorted by row then column."""
        dev, h = nn.device, self.half
        all_rows = torch.arange(self.n, device=dev)
        half_m, half_ok = reciprocal(nn, h, all_rows)  # N x (h+1): R(q, k1/2) of every view
        half_size = half_ok.sum(1)  # N
        rows_out, cols_out, vals_out = [], [], []
        for s in range(0, self.n, ROW_CHUNK):
            rows = all_rows[s : s + ROW_CHUNK]  # c
            r_m, r_ok = reciprocal(nn, self.k1, rows)  # c x (k1+1): R(p, k1)
            q_m, q_ok = half_m[r_m], half_ok[r_m]  # c x (k1+1) x (h+1): R(q, k1/2), q in R(p)
            in_r = ((q_m[..., None] == r_m[:, None, None, :]) & r_ok[:, None, None, :]).any(-1)
            shared = (in_r & q_ok).sum(-1)  # c x (k1+1)
            # |R(p) & R(q)| >= 2/3 |R(q)|, in integers: 3 |...| >= 2 |R(q)|.
            joins = r_ok & (3 * shared >= 2 * half_size[r_m])  # c x (k1+1)
            members = torch.cat([r_m, q_m.flatten(1)], 1)  # c x M
            valid = torch.cat([r_ok, (q_ok & joins[..., None]).flatten(1)], 1)
            row, col = _dedup_rows(members, valid, self.n)
            row = row + s
            d = 1.0 - (self.emb[row] * self.emb[col]).sum(1)  # m
            rows_out.append(row)
            cols_out.append(col)
            vals_out.append(torch.exp(-d))
        return torch.cat(rows_out), torch.cat(cols_out), torch.cat(vals_out)

    def _expand(
        self, nn: torch.Tensor, row: torch.Tensor, col: torch.Tensor, val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The local query expansion of Eq. 10, as CSR (crow [N + 1], col, val)."""
        dev, n = row.device, self.n
        crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
        crow[1:] = torch.bincount(row, minlength=n).cumsum(0)
        if self.k2 == 1:
            return crow, col, val
        outs = []
        for s in range(0, n, ROW_CHUNK):
            members = nn[s : s + ROW_CHUNK, : self.k2]  # c x k2, each view first
            owner = torch.arange(s, s + members.shape[0], device=dev)[:, None].expand_as(members)
            src, dst = members.reshape(-1), owner.reshape(-1)
            counts = crow[src + 1] - crow[src]
            take = _segments(crow[src], counts)  # entries of the member rows
            key = torch.repeat_interleave(dst, counts) * n + col[take]
            uniq, inv = torch.unique(key, return_inverse=True)  # sorted: by row, then column
            summed = torch.zeros(uniq.numel(), device=dev).index_add_(0, inv, val[take])
            outs.append((uniq // n, uniq % n, summed / self.k2))
        row, col, val = (torch.cat(x) for x in zip(*outs, strict=True))
        crow[1:] = torch.bincount(row, minlength=n).cumsum(0)
        return crow, col, val

    def scorer(self, query: torch.Tensor, gallery: torch.Tensor):
        """``scores(s, e, out)`` for :func:`~bev_reid.reid.metrics.query_results`: the negated
        final distances -d* [e - s, G] of queries ``query[s:e]`` to every gallery view.

        Args:
            query: [Q] int64 rows (of the N views) of the queries, in ranking order.
            gallery: [G] int64 rows of the gallery views, in ranking order.
        """
        dev, n = self.crow.device, self.n
        g_of = torch.full((n,), -1, dtype=torch.int64, device=dev)
        g_of[gallery] = torch.arange(gallery.numel(), device=dev)
        # Inverted index of the gallery's V: entries sorted by column (view j) -> gallery slot.
        g_entry = g_of[self.row] >= 0  # nnz
        by_col = torch.argsort(self.col[g_entry], stable=True)
        inv_slot = g_of[self.row[g_entry]][by_col]  # gallery slot of each entry
        inv_val = self.val[g_entry][by_col]
        col_count = torch.bincount(self.col[g_entry], minlength=n)  # N
        col_start = col_count.cumsum(0) - col_count
        g_sum, g_emb = self.row_sum[gallery], self.emb[gallery]
        # Pairs each query expands to: sum over its entries of the gallery entries of that column.
        counts = self.crow[1:] - self.crow[:-1]
        q_pairs = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(
            0, self.row, col_count[self.col]
        )[query]  # Q

        def scores(s: int, e: int, out: torch.Tensor) -> None:
            out.zero_()  # out accumulates sum_j min(V_p[j], V_g[j]): q x G
            start = s
            while start < e:  # sub-chunks of at most pair_budget pairs (one query at least)
                cum = q_pairs[start:e].cumsum(0)
                stop = start + max(1, int((cum <= self.pair_budget).sum()))
                rows = query[start:stop]
                take = _segments(self.crow[rows], counts[rows])  # the queries' entries
                local = torch.repeat_interleave(
                    torch.arange(start - s, stop - s, device=dev), counts[rows]
                )
                j, v = self.col[take], self.val[take]
                pick = _segments(col_start[j], col_count[j])  # matching gallery entries
                at = torch.repeat_interleave(local, col_count[j])
                mins = torch.minimum(torch.repeat_interleave(v, col_count[j]), inv_val[pick])
                out.index_put_((at, inv_slot[pick]), mins, accumulate=True)
                start = stop
            # -d* = -(1 - lam) (1 - min / max) - lam (1 - cos) = (1 - lam) min / max + lam cos - 1
            work = self.row_sum[query[s:e]][:, None] + g_sum[None, :]  # q x G
            out.div_(work.sub_(out).clamp_(min=1e-12))  # min / max, as max = sum - min
            torch.mm(self.emb[query[s:e]], g_emb.T, out=work)  # q x G cosines
            out.mul_(1.0 - self.lam).add_(work, alpha=self.lam).sub_(1.0)

        return scores


def _segments(start: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The concatenated ranges start[i] .. start[i] + count[i] - 1, as one int64 tensor."""
    total = int(count.sum())
    base = torch.repeat_interleave(start - (count.cumsum(0) - count), count)
    return base + torch.arange(total, device=start.device)

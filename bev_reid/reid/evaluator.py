"""The ReID evaluator: fast-reid's ``reset / process / evaluate`` over named protocols.

Every evaluation of the project goes through :class:`ReIDEvaluator`: the watcher, the demo, the
benchmarks and the floors. Views are marked query and gallery explicitly (never split by
position); a protocol is a registered function of the processed views (:func:`register_protocol`)
that returns flat records, one per condition:

- ``cmc``: the original method's single-shot CMC (:func:`~bev_reid.reid.metrics.cmc_single_shot`):
  ``trials`` random galleries of one view per identity, seeded, so every checkpoint is ranked on
  the same galleries. Per condition, only the views of that condition take part. It has no
  mAP / mINP: those keys hold None.
- ``retrieval``: every query view against all gallery views of the other keyframes (the group of
  a view is its keyframe, so the query itself and its own keyframe are excluded): CMC rank-k, mAP
  and mINP. Per condition, the queries of that condition against the whole gallery.

More protocols live in :mod:`bev_reid.reid.protocols`: ``retrieval_gap`` (re-identification
after a gap in time), ``tracklet`` (runs of views against runs of views), ``cross_condition``
(query in one condition, gallery in another) and ``retrieval_rerank`` (k-reciprocal re-ranking).

Records: ``protocol``, ``condition`` (``all`` or a condition name), ``rank1`` ... (the k of
``topk``), ``mAP``, ``mINP``, ``num_queries``, ``num_valid``, ``num_gallery``, and ``trials`` for
cmc (other protocols add their settings, e.g. ``min_gap_s``). Metrics over no valid query are
None (JSON null; NaN is kept out of the JSON).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bev_reid.reid.metrics import DEFAULT_TOPK, cmc_single_shot, query_results, summarize


@dataclass(frozen=True)
class Views:
    """Everything processed, as the protocols see it (N views).

    Attributes:
        emb: [N, D] float32 embeddings, L2-normalised unless the evaluator was told not to.
        ids: [N] int64 identities.
        groups: [N] int64 keyframe of each view (views of one group never match each other).
        conditions: N condition names (day / night / rain), None where unknown.
        timestamps: [N] float64 seconds, NaN where unknown.
        is_query: [N] bool, the views that are queries.
        in_gallery: [N] bool, the views that are in the gallery.
        places: [N, 2] float64 (x, y) of each view's vehicle in its keyframe, metres, NaN where
            unknown (only distances within one keyframe are used).
    """

    emb: torch.Tensor
    ids: torch.Tensor
    groups: torch.Tensor
    conditions: list[str | None]
    timestamps: torch.Tensor
    is_query: torch.Tensor
    in_gallery: torch.Tensor
    places: torch.Tensor

    def condition_masks(self, among: torch.Tensor | None = None) -> list[tuple[str, torch.Tensor]]:
        """``("all", among)`` and, for each condition present, its views among ``among``."""
        among = torch.ones(len(self.conditions), dtype=torch.bool) if among is None else among
        present = sorted({c for c in self.conditions if c is not None})
        cond = [(c, torch.tensor([x == c for x in self.conditions], dtype=torch.bool) & among)
                for c in present]  # fmt: skip
        return [("all", among), *cond]


@dataclass(frozen=True)
class Settings:
    """What the protocols take from ``eval_reid`` (the keys of the same names)."""

    topk: tuple[int, ...] = DEFAULT_TOPK
    trials: int = 10
    seed: int = 0
    chunk: int | None = None
    min_gap_s: float = 3.0
    tracklet_len: int = 4
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    neighbour_radius_m: float = 8.0


Protocol = Callable[[Views, Settings], list[dict[str, Any]]]
PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(name: str) -> Callable[[Protocol], Protocol]:
    """Function decorator: makes ``fn(views, settings) -> records`` the protocol ``name``."""

    def wrap(fn: Protocol) -> Protocol:
        if name in PROTOCOLS:
            raise KeyError(f"protocol {name!r} is registered twice")
        PROTOCOLS[name] = fn
        return fn

    return wrap


def view_groups(views: Sequence[dict[str, Any]]) -> torch.Tensor:
    """[N] int64 group of each view record: its keyframe (sample token), numbered by first
    appearance."""
    codes: dict[str, int] = {}
    return torch.tensor([codes.setdefault(v["sample_token"], len(codes)) for v in views],
                        dtype=torch.int64)  # fmt: skip


def number(value: Any) -> float | int | None:
    """A JSON-safe number: NaN and inf become None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def record(protocol: str, condition: str, summary: dict, topk: Sequence[int]) -> dict[str, Any]:
    """One flat record (module doc) from :func:`~bev_reid.reid.metrics.summarize`'s output."""
    rec: dict[str, Any] = {"protocol": protocol, "condition": condition}
    for k in topk:
        rec[f"rank{k}"] = number(summary.get(f"Rank-{k}"))
    rec["mAP"] = number(summary.get("mAP"))
    rec["mINP"] = number(summary.get("mINP"))
    for key in ("num_queries", "num_valid", "num_gallery", "trials"):
        if key in summary:
            rec[key] = int(summary[key])
    return rec


def overall(records: Sequence[dict[str, Any]], protocol: str) -> dict[str, Any] | None:
    """The record of ``protocol`` over all conditions (``condition == "all"``), or None."""
    return next((r for r in records if r["protocol"] == protocol and r["condition"] == "all"), None)


@register_protocol("cmc")
def cmc_protocol(v: Views, s: Settings) -> list[dict[str, Any]]:
    """Single-shot CMC over the views marked query or gallery, per condition (module doc)."""
    records = []
    for cond, mask in v.condition_masks(v.is_query | v.in_gallery):
        idx = mask.nonzero()[:, 0]
        res = cmc_single_shot(
            v.emb[idx.to(v.emb.device)], v.ids[idx], v.groups[idx], trials=s.trials,
            seed=s.seed, topk=s.topk,
        )  # fmt: skip
        n = int(res["num_identities"])
        summary = {**res, "mAP": None, "mINP": None, "num_queries": n, "num_valid": n,
                   "num_gallery": n}  # fmt: skip
        records.append(record("cmc", cond, summary, s.topk))
    return records


@register_protocol("retrieval")
def retrieval_protocol(v: Views, s: Settings) -> list[dict[str, Any]]:
    """Queries against the whole gallery, other keyframes only, per query condition."""
    q, g = v.is_query, v.in_gallery
    dev = v.emb.device
    results = query_results(
        v.emb[q.to(dev)], v.ids[q], v.groups[q], v.emb[g.to(dev)], v.ids[g], v.groups[g],
        chunk=s.chunk,
    )  # fmt: skip
    q_idx = q.nonzero()[:, 0]
    records = []
    for cond, mask in v.condition_masks():
        records.append(record("retrieval", cond, summarize(results.subset(mask[q_idx]), s.topk),
                              s.topk))  # fmt: skip
    return records


class ReIDEvaluator:
    """Collects embeddings batch by batch, then runs the chosen protocols.

    Args:
        protocols: registered protocol names, in the order their records come out.
        topk: the k of the CMC values.
        trials: random galleries of the ``cmc`` protocol.
        seed: seed of those galleries.
        normalize: L2-normalise embeddings before ranking.
        chunk: queries per chunk of the ranking (None: sized to the memory budget).
        device: where the ranking runs (None: CUDA when available, else CPU).
        settings: further settings of the protocols (:class:`Settings` fields beyond the ones
            above, e.g. ``min_gap_s=3.0``).

    Raises:
        KeyError: an unknown protocol; the message lists the registered ones.
    """

    def __init__(
        self,
        protocols: Sequence[str] = ("cmc", "retrieval"),
        topk: Sequence[int] = DEFAULT_TOPK,
        trials: int = 10,
        seed: int = 0,
        normalize: bool = True,
        chunk: int | None = None,
        device: torch.device | str | None = None,
        **settings: Any,
    ) -> None:
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown:
            raise KeyError(
                f"unknown protocol(s) {', '.join(unknown)}; valid: {', '.join(PROTOCOLS)}"
            )
        self.protocols = tuple(protocols)
        self.settings = Settings(tuple(topk), int(trials), int(seed), chunk, **settings)
        self.normalize = normalize
        self.device = device
        self.reset()

    @classmethod
    def from_config(cls, ec: Any, device: torch.device | str | None = None) -> ReIDEvaluator:
        """The evaluator of an :class:`~bev_reid.config.EvalReIDConfig`: its ``protocols``,
        with ``retrieval_rerank`` right after ``retrieval`` when ``rerank`` is set."""
        protocols = list(ec.protocols)
        if ec.rerank and "retrieval_rerank" not in protocols:
            at = protocols.index("retrieval") + 1 if "retrieval" in protocols else len(protocols)
            protocols.insert(at, "retrieval_rerank")
        return cls(
            protocols, topk=ec.topk, trials=ec.trials, seed=ec.seed, device=device,
            min_gap_s=ec.min_gap_s, tracklet_len=ec.tracklet_len, rerank_k1=ec.rerank_k1,
            rerank_k2=ec.rerank_k2, rerank_lambda=ec.rerank_lambda,
            neighbour_radius_m=ec.neighbour_radius_m,
        )  # fmt: skip

    def reset(self) -> None:
        """Forgets every processed view."""
        self._emb: list[torch.Tensor] = []
        self._ids: list[torch.Tensor] = []
        self._groups: list[torch.Tensor] = []
        self._times: list[torch.Tensor] = []
        self._places: list[torch.Tensor] = []
        self._is_query: list[torch.Tensor] = []
        self._in_gallery: list[torch.Tensor] = []
        self._conditions: list[str | None] = []
        self._group_codes: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(e.shape[0] for e in self._emb)

    def process(
        self,
        embeddings: torch.Tensor,
        ids: torch.Tensor,
        groups: torch.Tensor,
        is_query: torch.Tensor | bool = True,
        in_gallery: torch.Tensor | bool | None = None,
        conditions: Sequence[str | None] | None = None,
        timestamps: torch.Tensor | None = None,
        places: torch.Tensor | None = None,
    ) -> None:
        """Adds a batch of B views.

        Args:
            embeddings: [B, D] embeddings (any device; stored on CPU).
            ids: [B] integer identities.
            groups: [B] integer groups (keyframes).
            is_query: [B] bool, or one bool for the whole batch.
            in_gallery: [B] bool or one bool; None: the views that are not queries when
                ``is_query`` marks some views only, else every view (query = gallery).
            conditions: B condition names, or None when unknown.
            timestamps: [B] seconds, or None when unknown.
            places: [B, 2] (x, y) metres of each view's vehicle in its keyframe (NaN rows:
                unknown), or None when unknown.
        """
        b = embeddings.shape[0]

        def marks(value: torch.Tensor | bool, name: str) -> torch.Tensor:
            t = torch.as_tensor(value).reshape(-1).bool().cpu()
            t = t.expand(b) if t.numel() == 1 and b != 1 else t
            if t.shape != (b,):
                raise ValueError(f"process: {name} must be [{b}] or one bool, got {tuple(t.shape)}")
            return t.clone()

        q = marks(is_query, "is_query")
        if in_gallery is None:
            g = torch.ones(b, dtype=torch.bool) if bool(q.all()) else ~q
        else:
            g = marks(in_gallery, "in_gallery")
        if ids.shape != (b,) or groups.shape != (b,):
            raise ValueError(
                f"process: ids and groups must be [{b}], got {tuple(ids.shape)} and "
                f"{tuple(groups.shape)}"
            )
        if conditions is not None and len(conditions) != b:
            raise ValueError(f"process: {len(conditions)} conditions for {b} views")
        times = torch.full((b,), math.nan, dtype=torch.float64)
        if timestamps is not None:
            times = torch.as_tensor(timestamps).reshape(-1).double().cpu()
            if times.shape != (b,):
                raise ValueError(f"process: {times.numel()} timestamps for {b} views")
        where = torch.full((b, 2), math.nan, dtype=torch.float64)
        if places is not None:
            where = torch.as_tensor(places).double().cpu()
            if where.shape != (b, 2):
                raise ValueError(f"process: places must be [{b}, 2], got {tuple(where.shape)}")
        self._emb.append(embeddings.detach().float().cpu())
        self._ids.append(ids.detach().cpu().long())
        self._groups.append(groups.detach().cpu().long())
        self._times.append(times)
        self._places.append(where)
        self._is_query.append(q)
        self._in_gallery.append(g)
        self._conditions.extend(conditions if conditions is not None else [None] * b)

    def process_views(
        self, embeddings: torch.Tensor, ids: torch.Tensor, views: Sequence[dict[str, Any]]
    ) -> None:
        """Adds B views described by their dataset records (``sample_token`` gives the group,
        ``condition``, ``timestamp`` (microseconds) and ``center`` (x, y of the box in the
        keyframe, metres) are used when present); every view is a query and in the gallery."""
        groups = torch.tensor(
            [
                self._group_codes.setdefault(v["sample_token"], len(self._group_codes))
                for v in views
            ],
            dtype=torch.int64,
        )
        times = torch.tensor([v.get("timestamp", math.nan) for v in views], dtype=torch.float64)
        places = torch.tensor(
            [v["center"][:2] if v.get("center") else (math.nan, math.nan) for v in views],
            dtype=torch.float64,
        ).reshape(-1, 2)
        self.process(embeddings, ids, groups, True, True, [v.get("condition") for v in views],
                     times / 1e6, places)  # fmt: skip

    def views(self) -> Views:
        """What has been processed, on the ranking device."""
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not self._emb:
            empty = torch.zeros(0, dtype=torch.long)
            return Views(torch.zeros(0, 1, device=device), empty, empty, [],
                         empty.double(), empty.bool(), empty.bool(),
                         torch.zeros(0, 2, dtype=torch.float64))  # fmt: skip
        emb = torch.cat(self._emb)
        if self.normalize:
            emb = F.normalize(emb, dim=1)
        return Views(
            emb.to(device), torch.cat(self._ids), torch.cat(self._groups), list(self._conditions),
            torch.cat(self._times), torch.cat(self._is_query), torch.cat(self._in_gallery),
            torch.cat(self._places),
        )  # fmt: skip

    def evaluate(self) -> list[dict[str, Any]]:
        """The records of every protocol (module doc), in protocol order."""
        v = self.views()
        return [r for name in self.protocols for r in PROTOCOLS[name](v, self.settings)]


# The protocols of bev_reid.reid.protocols register themselves on import; imported here, after
# the registry exists, so that every user of the evaluator sees them.
from bev_reid.reid import protocols as _protocols  # noqa: E402, F401

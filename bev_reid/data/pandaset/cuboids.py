"""Which PandaSet cuboids become nuScenes annotations, and of which instance.

Objects that move in the overlap of the two LiDARs got two cuboids, one per LiDAR
(``cuboids.sensor_id`` 0 for the Pandar64, 1 for the PandarGT, -1 for every other cuboid), each
naming the other's ``uuid`` in ``cuboids.sibling_id``. One of the two is kept: the one of the LiDAR
kept (:data:`~bev_reid.data.pandaset.conventions.SENSOR_ID`). The links are not always clean in
the data: some name their own uuid, some are cut short, some point one way only. A cuboid of the
other LiDAR is dropped when a kept-LiDAR cuboid of the same frame is linked to it either way
(a cut-short id matches the one uuid it begins, when at least 8 characters long); a cuboid with no
such partner is kept, so an object is never lost, at worst counted twice.

The uuids linked by a dropped pair are one object: they form one instance (its token is the hex
of the group's smallest kept uuid), so a track keeps its identity when it leaves the overlap under
the other LiDAR's uuid. Were two cuboids of one frame to fall in one group, that group is split
back into its uuids.
"""

from __future__ import annotations

import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bev_reid.data.nuscenes_format import Tokens
from bev_reid.data.pandaset.conventions import CATEGORY_OF, SENSOR_ID, category_of

MIN_PREFIX = 8  # shortest cut-short sibling id matched by prefix


@dataclass
class CuboidSelection:
    """The cuboids to write, per frame, with ``instance`` (uuid of the instance) and ``category``
    columns added; and what was left out."""

    frames: dict[int, object] = field(default_factory=dict)  # frame -> DataFrame
    duplicates_dropped: int = 0
    left_out: Counter = field(default_factory=Counter)  # label -> cuboids (no nuScenes class)
    unknown_labels: set[str] = field(default_factory=set)  # labels not in CATEGORY_OF


def instance_token(uuid: str) -> str:
    """A PandaSet uuid as a nuScenes token: its 32 hex digits (a hash if it is not a uuid)."""
    try:
        return uuidlib.UUID(uuid).hex
    except ValueError:
        return Tokens("pandaset-uuid")(uuid)


def _resolve(sibling: object, uuids: set[str]) -> str | None:
    """The uuid a sibling id names among ``uuids``, or None."""
    if not isinstance(sibling, str) or sibling in ("", "-"):
        return None
    if sibling in uuids:
        return sibling
    if len(sibling) >= MIN_PREFIX:
        found = [u for u in uuids if u.startswith(sibling)]
        if len(found) == 1:
            return found[0]
    return None


def overlap_pairs(table, keep_sensor: int) -> list[tuple[str, str]]:
    """(kept uuid, dropped uuid) for each other-LiDAR cuboid of one frame that has a partner."""
    sensor = dict(zip(table["uuid"], table["cuboids.sensor_id"].astype(int), strict=True))
    uuids = set(sensor)
    links: dict[str, set[str]] = {u: set() for u in uuids}
    for u, s in zip(table["uuid"], table["cuboids.sibling_id"], strict=True):
        other = _resolve(s, uuids)
        if other is not None and other != u:
            links[u].add(other)
            links[other].add(u)
    drop_sensor = 1 - keep_sensor
    pairs = []
    for u in sorted(uuids):
        if sensor[u] != drop_sensor:
            continue
        partners = sorted(p for p in links[u] if sensor[p] == keep_sensor)
        if partners:
            pairs.append((partners[0], u))
    return pairs


def _find(parent: dict[str, str], u: str) -> str:
    while parent.setdefault(u, u) != u:
        parent[u] = parent[parent[u]]
        u = parent[u]
    return u


def group_instances(kept: dict[int, list[str]], pairs: list[tuple[str, str]]) -> dict[str, str]:
    """uuid -> instance uuid: linked uuids share the smallest kept uuid of their group.

    Args:
        kept: frame -> uuids written in that frame; pairs: (kept, dropped) links of all frames.
    """
    parent: dict[str, str] = {}
    for a, b in pairs:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    ever_kept = {u for uuids in kept.values() for u in uuids}
    members: dict[str, list[str]] = {}
    for u in parent:
        members.setdefault(_find(parent, u), []).append(u)
    rep = {}
    for group in members.values():
        chosen = min((u for u in group if u in ever_kept), default=min(group))
        rep.update({u: chosen for u in group})
    split = set()
    for uuids in kept.values():
        seen = Counter(rep.get(u, u) for u in uuids)
        split |= {r for r, n in seen.items() if n > 1}
    return {u: (u if rep.get(u, u) in split else rep.get(u, u)) for u in ever_kept}


def select_cuboids(tables: dict[int, object], lidars: str) -> CuboidSelection:
    """Drops overlap duplicates and cuboids without a nuScenes class; names each instance.

    Args:
        tables: frame -> the frame's cuboid DataFrame (PandaSet's columns).
        lidars: ``pandaset.lidars`` (pandar64, pandargt or both).
    """
    out = CuboidSelection()
    keep_sensor = SENSOR_ID[lidars]
    pairs: list[tuple[str, str]] = []
    kept: dict[int, object] = {}
    for frame, table in tables.items():
        frame_pairs = overlap_pairs(table, keep_sensor)
        dropped = {b for _, b in frame_pairs}
        pairs += frame_pairs
        out.duplicates_dropped += len(dropped)
        labels = table["label"].astype(str)
        out.unknown_labels |= set(labels) - set(CATEGORY_OF)
        categories = [
            category_of(label, age) if label in CATEGORY_OF else None
            for label, age in zip(labels, table["attributes.pedestrian_age"], strict=True)
        ]
        mapped = np.array([c is not None for c in categories], bool)
        duplicate = table["uuid"].isin(dropped).to_numpy()
        out.left_out.update(labels[~mapped & ~duplicate])
        kept[frame] = table.assign(category=categories)[mapped & ~duplicate].reset_index(drop=True)
    instance = group_instances({f: list(t["uuid"]) for f, t in kept.items()}, pairs)
    for frame, table in kept.items():
        out.frames[frame] = table.assign(instance=[instance[u] for u in table["uuid"]])
    return out

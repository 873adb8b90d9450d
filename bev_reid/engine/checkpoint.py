"""Checkpoints: safetensors weights plus a JSON sidecar, written atomically, read without pickle.

A checkpoint of step S in folder F is two files:

- ``F/step_00000S.safetensors``: every tensor (model weights under ``model.``, optimizer state
  under ``optim.``, RNG states under ``rng.``);
- ``F/step_00000S.json``: the sidecar: format version, step, the weights' file name, size and
  SHA-256, the optimizer's non-tensor state, and free metadata (config, metrics).

The sidecar is written last, so a checkpoint without one is unfinished and is never listed.
Loading checks size and hash before parsing, so a truncated or corrupt file is refused with a
:class:`CheckpointError` naming it. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from bev_reid.engine.io import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})\.json$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unfinished, truncated, corrupt or of another format."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``tensors`` by prefixed name, and the sidecar's ``meta``."""

    path: Path  # the sidecar
    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    optim_meta: dict[str, Any] | None = None
    sha256: str = ""  # of the weights file

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix.``, with the prefix removed."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.tensors.items() if k.startswith(p)}

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.group("model")


def _plain(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses tensors that share storage; a CPU copy of each is small and safe.
    return t.detach().to("cpu", copy=True).contiguous()


def optimizer_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Splits ``optimizer.state_dict()`` into tensors and JSON-safe metadata."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for idx, values in state["state"].items():
        scalars = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = _plain(value)
            else:
                scalars[key] = value
        per_param[str(idx)] = scalars
    return tensors, {"param_groups": state["param_groups"], "scalars": per_param}


def optimizer_from_tensors(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_tensors`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for idx, scalars in meta["scalars"].items():
        state[int(idx)] = dict(scalars)
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.json"


def save_checkpoint(
    folder: str | os.PathLike,
    step: int,
    model: torch.nn.Module | dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    meta: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    save_rng: bool = True,
) -> Path:
    """Writes the checkpoint of ``step`` into ``folder`` and returns the sidecar's path.

    Args:
        model: a module (its ``state_dict()``; a DDP wrapper is unwrapped) or a state dict.
        optimizer: saved so that training resumes exactly.
        meta: JSON-safe data kept in the sidecar (config, metrics, ...).
        extra_tensors: more tensors, stored under ``extra.``.
        save_rng: store the torch CPU (and CUDA) RNG states, for an exact resume.
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    tensors = {f"model.{k}": _plain(v) for k, v in state.items()}
    optim_meta = None
    if optimizer is not None:
        opt_tensors, optim_meta = optimizer_to_tensors(optimizer.state_dict())
        tensors.update({f"optim.{k}": v for k, v in opt_tensors.items()})
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = _plain(v)
    if save_rng:
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
    blob = save_safetensors(tensors, metadata={"format": "pt", "step": str(step)})
    sidecar = checkpoint_path(folder, step)
    weights = sidecar.with_suffix(".safetensors")
    atomic_write_bytes(weights, blob)
    record = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "weights": weights.name,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "optimizer": optim_meta,
        "meta": meta or {},
    }
    atomic_write_text(sidecar, json.dumps(record, indent=1, sort_keys=True))
    return sidecar


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A sidecar path from a sidecar, a weights file, a checkpoints folder or a run folder
    (holding ``checkpoints/``): the latest finished checkpoint of a folder."""
    p = Path(path)
    if p.is_dir():
        latest = latest_checkpoint(p)
        if latest is None and (p / "checkpoints").is_dir():
            latest = latest_checkpoint(p / "checkpoints")
        if latest is None:
            raise CheckpointError(
                f"no finished checkpoint in folder {str(p)!r}"
                + ("" if (p / "checkpoints").is_dir() else " (nor in a checkpoints/ folder in it)")
            )
        return latest
    if p.suffix not in (".json", ".safetensors", ""):
        raise CheckpointError(
            f"{str(p)!r} is not a bev-reid checkpoint: give a step_*.json sidecar, its "
            ".safetensors weights, or a run or checkpoints folder (pickled .pt/.pth files are "
            "never loaded)"
        )
    if p.suffix == ".safetensors":
        p = p.with_suffix(".json")
    if not p.exists():
        if p.with_suffix(".safetensors").exists():
            raise CheckpointError(
                f"checkpoint {str(p.with_suffix('.safetensors'))!r} is unfinished: "
                f"its sidecar {p.name} is missing"
            )
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    return p


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Reads and verifies a checkpoint (see the module doc); never unpickles."""
    sidecar = resolve_checkpoint(path)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint sidecar {str(sidecar)!r} is not valid JSON: {e}") from e
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(sidecar)!r} has format "
            f"{record.get('format_version') if isinstance(record, dict) else None!r}, "
            f"this bev-reid reads format {FORMAT_VERSION}"
        )
    check_record(record, sidecar)
    weights = sidecar.parent / record["weights"]
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {str(weights)!r} are missing")
    blob = weights.read_bytes()
    if len(blob) != record["size"]:
        raise CheckpointError(
            f"checkpoint weights {str(weights)!r} are truncated or changed: "
            f"{len(blob)} bytes, expected {record['size']}"
        )
    if hashlib.sha256(blob).hexdigest() != record["sha256"]:
        raise CheckpointError(
            f"checkpoint weights {str(weights)!r} are corrupt: "
            "the SHA-256 does not match its sidecar"
        )
    try:
        tensors = load_safetensors(blob)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint weights {str(weights)!r} cannot be parsed: {e}") from e
    if str(map_location) != "cpu":
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    return Checkpoint(
        sidecar, record["step"], tensors, record["meta"], record["optimizer"], record["sha256"]
    )


def check_record(record: dict[str, Any], sidecar: Path) -> None:
    """Refuses a sidecar whose fields have the wrong type (valid JSON, damaged content)."""
    kinds = {"step": int, "weights": str, "size": int, "sha256": str, "meta": dict,
             "optimizer": (dict, type(None))}  # fmt: skip
    for key, kind in kinds.items():
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"checkpoint sidecar {str(sidecar)!r} is damaged: {key!r} is {value!r}"
            )
    if record["step"] < 0 or Path(record["weights"]).name != record["weights"]:
        raise CheckpointError(
            f"checkpoint sidecar {str(sidecar)!r} is damaged: step {record['step']!r}, "
            f"weights {record['weights']!r} (a file name next to the sidecar)"
        )
    optim = record["optimizer"]
    if optim is not None and not (
        isinstance(optim.get("param_groups"), list) and isinstance(optim.get("scalars"), dict)
    ):
        raise CheckpointError(f"checkpoint sidecar {str(sidecar)!r} is damaged: 'optimizer'")


def restore_training_state(
    ckpt: Checkpoint, optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True
) -> None:
    """Loads the optimizer state and RNG states saved with the checkpoint."""
    if optimizer is not None:
        if ckpt.optim_meta is None:
            raise CheckpointError(
                f"checkpoint {str(ckpt.path)!r} holds no optimizer state to resume from"
            )
        optimizer.load_state_dict(optimizer_from_tensors(ckpt.group("optim"), ckpt.optim_meta))
    if restore_rng:
        if "rng.torch" in ckpt.tensors:
            torch.set_rng_state(ckpt.tensors["rng.torch"].cpu())
        if "rng.cuda" in ckpt.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(ckpt.tensors["rng.cuda"].cpu())


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Finished checkpoints (their sidecars) of ``folder``, by step."""
    p = Path(folder)
    if not p.is_dir():
        return []
    found = [(int(m.group(1)), f) for f in p.iterdir() if (m := _NAME.match(f.name))]
    return [f for _, f in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Deletes all but the ``keep`` newest checkpoints (``keep`` <= 0 keeps all)."""
    if keep <= 0:
        return
    for sidecar in list_checkpoints(folder)[:-keep]:
        sidecar.unlink(missing_ok=True)  # the sidecar first: the checkpoint stops being listed
        sidecar.with_suffix(".safetensors").unlink(missing_ok=True)

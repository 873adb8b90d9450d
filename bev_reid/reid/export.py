"""ONNX export of a ReID checkpoint's embedding (`bev-reid export`) and an embedder that runs it.

The exported graph is what :meth:`~bev_reid.models.reid.BEVReIDModel.embed` computes: crops
``crops`` [B, C, S, S] float32 -> the checkpoint's per-channel input standardisation -> the
residual net in eval mode (BatchNorm running statistics, no dropout) -> unit-norm embeddings
``embedding`` [B, E]. The batch B is dynamic; C and S are the checkpoint's. It is exported with
torch's ``torch.export``-based ONNX exporter (it needs ``onnxscript``; ``pip install
bev-reid[export]``), checked under onnxruntime when that is installed, and written atomically.

Beside ``model.onnx`` goes ``model.json`` (same stem, written atomically, after the graph), what a
deployment needs to cut crops the way the net was trained:

- ``format`` (``bev-reid-onnx``), ``version``, ``opset``, ``input`` / ``output`` (names and
  shapes, ``"B"`` for the batch), ``embedding_dim``;
- ``channels`` (the crop channels, in order) and ``crop_recipe`` (the checkpoint's
  ``meta["crop_recipe"]``: grid, crop size and cell, modalities, LiDAR raster, LSS checkpoint,
  filters; see :mod:`bev_reid.reid.extract`);
- ``checkpoint`` (path, step and SHA-256 of the weights it came from), ``input_mean`` /
  ``input_std`` (already inside the graph; for reference).

:class:`OnnxEmbedder` loads the pair and has the ``embed`` interface of the model, so
:func:`~bev_reid.reid.evaluate.embed_dataset` and the tracker (``track.reid_checkpoint`` set to
an ``.onnx`` file) run it in place of the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bev_reid.engine.checkpoint import resolve_checkpoint
from bev_reid.engine.io import atomic_write_bytes, atomic_write_text
from bev_reid.models.reid import BEVReIDModel

FORMAT = "bev-reid-onnx"
FORMAT_VERSION = 1
OPSET = 18
INPUT, OUTPUT = "crops", "embedding"


class ExportError(ValueError):
    """The export cannot be done: a bad ``--out``, or the ONNX tools are missing."""


class EmbeddingGraph(nn.Module):
    """What is exported: standardisation and net of a :class:`BEVReIDModel`, crops [B, C, S, S]
    -> unit-norm embeddings [B, E] (the model must be in eval mode)."""

    def __init__(self, model: BEVReIDModel):
        super().__init__()
        self.net = model.net
        self.register_buffer("mean", model.input_mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("std", model.input_std.detach().clone().view(1, -1, 1, 1))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net((crops - self.mean) / self.std)  # B x E


def sidecar_of(path: str | os.PathLike) -> Path:
    """``model.json`` beside ``model.onnx``."""
    return Path(path).with_suffix(".json")


@dataclass(frozen=True)
class Exported:
    """What :func:`export_onnx` wrote, and how well onnxruntime agreed (None: not checked)."""

    onnx: Path
    sidecar: Path
    max_abs_diff: float | None


def crop_size(model: BEVReIDModel) -> int:
    """S, the crop side the checkpoint was trained on (its crop recipe; 24 when unrecorded)."""
    recipe = model.checkpoint_meta.get("crop_recipe") or {}
    return int((recipe.get("crop") or {}).get("size", 24))


def export_onnx(
    checkpoint: str | os.PathLike, out: str | os.PathLike, check: bool = True
) -> Exported:
    """Writes the embedding of a ReID checkpoint as ONNX, and its sidecar (module doc).

    Args:
        checkpoint: a checkpoint sidecar, its weights file, or a run's checkpoint folder (latest).
        out: the ``.onnx`` file to write; ``model.json`` goes beside it.
        check: compare onnxruntime's output with ``BEVReIDModel.embed`` on random crops (skipped
            when onnxruntime is not installed).

    Raises:
        CheckpointError: the checkpoint is missing, damaged or not a ReID checkpoint.
        ExportError: ``out`` does not end in ``.onnx``, or onnxscript is missing.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"--out must name an .onnx file, got {str(out)!r}")
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say so before any work)
    except ImportError as e:
        raise ExportError(
            "exporting needs onnx and onnxscript: pip install 'bev-reid[export]'"
        ) from e
    sidecar_path = resolve_checkpoint(checkpoint)
    model = BEVReIDModel.from_checkpoint(sidecar_path, map_location="cpu").eval()
    graph = EmbeddingGraph(model).eval()
    c, s = model.config["in_channels"], crop_size(model)
    example = torch.zeros(2, c, s, s)
    # The exporter's own notes (no torchvision ops to register, deprecations inside torch) say
    # nothing about this graph: kept off the user's console.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(
                graph, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes={"crops": {0: torch.export.Dim("batch")}},
                opset_version=OPSET, external_data=False, verbose=False,
            )  # fmt: skip
    finally:
        quiet.setLevel(level)
    data = program.model_proto.SerializeToString()
    diff = agreement(data, model, c, s) if check else None
    atomic_write_bytes(out, data)
    meta = model.checkpoint_meta
    info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "opset": OPSET,
        "input": {"name": INPUT, "shape": ["B", c, s, s], "dtype": "float32"},
        "output": {
            "name": OUTPUT,
            "shape": ["B", model.config["embedding_dim"]],
            "dtype": "float32",
            "unit_norm": True,
        },  # fmt: skip
        "embedding_dim": model.config["embedding_dim"],
        "channels": meta.get("channels"),
        "crop_recipe": meta.get("crop_recipe"),
        "checkpoint": {
            "path": str(model.checkpoint_path),
            "step": model.checkpoint_step,
            "sha256": json.loads(Path(sidecar_path).read_text()).get("sha256"),
        },
        "input_mean": model.input_mean.tolist(),
        "input_std": model.input_std.tolist(),
        "torch": torch.__version__,
    }
    side = atomic_write_text(sidecar_of(out), json.dumps(info, indent=1) + "\n")
    return Exported(out, side, diff)


def _session(model: bytes | str, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def agreement(data: bytes, model: BEVReIDModel, c: int, s: int, batch: int = 5) -> float | None:
    """Largest |onnxruntime - embed| over a seeded batch of random crops; None without
    onnxruntime."""
    try:
        session = _session(data)
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    crops = model.input_mean.view(1, -1, 1, 1) + model.input_std.view(1, -1, 1, 1) * torch.randn(
        batch, c, s, s, generator=g
    )  # B x C x S x S, about the training crops' scale
    got = session.run([OUTPUT], {INPUT: crops.numpy()})[0]
    return float(np.abs(got - model.embed(crops).numpy()).max())


class OnnxEmbedder(nn.Module):
    """An exported embedding (``model.onnx`` and its ``model.json``) under onnxruntime, with the
    interface of :class:`BEVReIDModel` that users of embeddings need: ``embed``, ``config``
    (``in_channels``, ``embedding_dim``), ``checkpoint_meta`` (``channels``, ``crop_recipe``)
    and ``checkpoint_path``.

    It runs on the CPU whatever ``to`` says; a zero-size parameter stands for that device, so
    code that finds a model's device through its parameters works unchanged.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime's intra-op threads (0: torch's count).

    Raises:
        FileNotFoundError: the file or its ``.json`` sidecar is missing.
        ExportError: the sidecar is not a bev-reid export, or onnxruntime is missing.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        super().__init__()
        path = Path(path)
        side = sidecar_of(path)
        for p in (path, side):
            if not p.is_file():
                raise FileNotFoundError(f"exported embedding {str(p)!r} does not exist")
        info: Any = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ExportError(f"{str(side)!r} is not the sidecar of a `bev-reid export`")
        try:
            self.session = _session(str(path), threads)
        except ImportError as e:
            raise ExportError("running an ONNX embedding needs onnxruntime") from e
        self.info = info
        shape = info["input"]["shape"]
        self.config = {"in_channels": int(shape[1]), "embedding_dim": int(info["embedding_dim"])}
        self.checkpoint_meta = {"channels": info["channels"], "crop_recipe": info["crop_recipe"]}
        self.checkpoint_path, self.checkpoint_step = path, info["checkpoint"]["step"]
        self.device_marker = nn.Parameter(torch.zeros(0), requires_grad=False)

    @torch.no_grad()
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops [N, C, S, S] -> unit-norm embeddings [N, E] float32, on the crops' device."""
        if crops.dim() != 4 or crops.shape[1] != self.config["in_channels"]:
            raise ValueError(
                f"the exported embedding takes crops [N, {self.config['in_channels']}, S, S], "
                f"got {tuple(crops.shape)}"
            )
        if crops.shape[0] == 0:
            return torch.zeros(0, self.config["embedding_dim"], device=crops.device)
        x = crops.detach().float().cpu().contiguous().numpy()
        out = self.session.run([OUTPUT], {INPUT: x})[0]
        return torch.from_numpy(out).to(crops.device)


def load_embedder(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A ReID checkpoint (file or folder) as a :class:`BEVReIDModel`, or an ``.onnx`` export as
    an :class:`OnnxEmbedder` (its crop recipe comes from its sidecar)."""
    if str(path).endswith(".onnx"):
        return OnnxEmbedder(path)
    return BEVReIDModel.from_checkpoint(path, map_location=device)

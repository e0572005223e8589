"""Checkpoint files of the reward trainer: JSON state, RNG and optimizer state as safetensors + JSON.

Nothing here unpickles: tensors go to safetensors, structure to JSON.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["CHECKPOINT_PREFIX", "load_checkpoint_state"]

CHECKPOINT_PREFIX = "checkpoint-"
#: folder under ``output_dir`` keeping a frozen trunk once for all ``checkpoint-*/model`` folders
TRUNK_STORE_DIR = "trunk"
_CHECKPOINT_FORMAT_VERSION = 1


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonable(x: Any) -> Any:
    """Convert tuples/NumPy scalars to JSON types (raise TypeError for anything else)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"cannot store a value of type {type(x).__name__} in a JSON checkpoint file")


def _get_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global RNG is what we save)
    version, py_state, gauss = random.getstate()
    meta = {
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss},
    }
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in sorted(cuda, key=lambda k: int(k.rsplit("_", 1)[1]))]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    npm = meta["numpy"]
    np.random.set_state(  # noqa: NPY002 (restoring the global RNG)
        {
            "bit_generator": npm["bit_generator"],
            "state": {"key": np.asarray(npm["state"]["key"], dtype=np.uint32), "pos": npm["state"]["pos"]},
            "has_gauss": npm["has_gauss"],
            "gauss": npm["gauss"],
        }
    )
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))


def _optimizer_state_to_files(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into safetensors-ready tensors and a JSON structure."""
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for pid, entry in state_dict["state"].items():
        meta_entry: dict[str, Any] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tkey = f"state.{pid}.{key}"
                tensors[tkey] = value.detach().to("cpu").clone().contiguous()
                meta_entry[key] = {"tensor": tkey}
            else:
                meta_entry[key] = {"value": _jsonable(value)}
        state_meta[str(pid)] = meta_entry
    groups = []
    for g in state_dict["param_groups"]:
        g2 = {}
        tuple_keys = []
        for k, v in g.items():
            if isinstance(v, tuple):
                tuple_keys.append(k)
            g2[k] = _jsonable(v)
        g2["__tuple_keys__"] = tuple_keys
        groups.append(g2)
    return tensors, {"state": state_meta, "param_groups": groups}


def _optimizer_state_from_files(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {
            k: (tensors[v["tensor"]] if "tensor" in v else v["value"]) for k, v in entry.items()
        }
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        for k in g.pop("__tuple_keys__", []):
            g[k] = tuple(g[k])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _trunk_store_kwargs(model: Any, output_dir: str) -> dict[str, str]:
    """``{"trunk_store": <output_dir>/trunk}`` for an auq model with a frozen trunk, else ``{}``.

    A checkpoint then holds its heads (a few KB) and a checksummed reference to the one trunk copy
    instead of the trunk itself (87 MB for MiniLM); the final ``save_model`` stays self-contained.
    """
    from auq.models import BaseRewardModel

    if isinstance(model, BaseRewardModel) and model.trunk_frozen:
        return {"trunk_store": os.path.join(output_dir, TRUNK_STORE_DIR)}
    return {}


def _checkpoint_step(path: str) -> int | None:
    m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


def _list_checkpoints(output_dir: str) -> list[str]:
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = _checkpoint_step(name)
        full = os.path.join(output_dir, name)
        if step is not None and os.path.isdir(full):
            found.append((step, full))
    return [p for _, p in sorted(found)]


_REQUIRED_CHECKPOINT_FILES = (
    "trainer_state.json",
    "optimizer.safetensors",
    "optimizer.json",
    "scheduler.json",
    "model",
)


def load_checkpoint_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``trainer_state.json`` of a checkpoint folder.

    Raises ``ValueError`` naming the missing file when the folder is incomplete.

    Examples
    --------
    >>> load_checkpoint_state("out/checkpoint-10")["global_step"]  # doctest: +SKIP
    10
    """
    path = os.fspath(checkpoint_dir)
    if not os.path.isdir(path):
        raise ValueError(f"resume_from_checkpoint: {path!r} is not a checkpoint folder")
    for name in _REQUIRED_CHECKPOINT_FILES:
        if not os.path.exists(os.path.join(path, name)):
            raise ValueError(
                f"resume_from_checkpoint: checkpoint {path!r} is incomplete, {name!r} is missing"
            )
    state = _read_json(os.path.join(path, "trainer_state.json"))
    for key in ("global_step", "epoch", "batches_in_epoch"):
        if key not in state:
            raise ValueError(
                f"resume_from_checkpoint: {path!r}/trainer_state.json lacks the field {key!r}"
            )
    return state



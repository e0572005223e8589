"""The one checkpoint format of auq's trainers (reward model, DPO, online RL).

``checkpoint-<step>/`` holds

* ``model/``: the model through its own ``save_pretrained`` (a Hugging Face model, an auq reward
  model) with the tokenizer beside it, else its state dict as ``model/model.safetensors``;
* ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state (tensors / structure);
* ``scheduler.json``: the learning-rate schedule's state;
* ``rng_state_<rank>.safetensors`` + ``.json``: every process's torch / CUDA / NumPy / Python RNGs;
* ``trainer_state.json``: step, data position (``epoch``, ``batches_in_epoch``), log history,
  config and whatever else the trainer adds; ``<name>.safetensors`` for extra tensors (anchors, a
  value head).

:func:`save_checkpoint` writes it to a temporary sibling folder and renames it into place, so an
interrupted save never leaves a half-written checkpoint; :func:`load_checkpoint` restores it in
place. Nothing here unpickles: tensors go to safetensors, structure to JSON.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_PREFIX",
    "load_checkpoint",
    "load_checkpoint_state",
    "resolve_checkpoint",
    "rotate_checkpoints",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

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




# --------------------------------------------------------------------------------------------
# writing and reading a whole checkpoint (every trainer)
# --------------------------------------------------------------------------------------------


def _unwrap(model: Any, accelerator: Any) -> Any:
    return accelerator.unwrap_model(model) if accelerator is not None else model


def save_model_files(
    model: Any, path: str, *, tokenizer: Any = None, state_dict: Mapping[str, torch.Tensor] | None = None,
    **save_kwargs: Any,
) -> None:
    """Write ``model`` to the folder ``path``: its ``save_pretrained`` when it has one (``save_kwargs``
    passed on), else its state dict as ``model.safetensors``; the tokenizer beside it.

    ``state_dict`` replaces the model's own (the full state gathered from an FSDP / DeepSpeed model,
    whose local parameters are shards); it goes to ``save_pretrained(state_dict=...)``."""
    from .._io import save_safetensors

    if callable(getattr(model, "save_pretrained", None)):
        if state_dict is not None:
            save_kwargs["state_dict"] = state_dict
        model.save_pretrained(path, **save_kwargs)
    else:
        os.makedirs(path, exist_ok=True)
        own = model.state_dict() if state_dict is None else state_dict
        state = {k: v.detach().to("cpu").clone().contiguous() for k, v in own.items()}
        save_safetensors(state, os.path.join(path, "model.safetensors"))
    if tokenizer is not None and callable(getattr(tokenizer, "save_pretrained", None)):
        tokenizer.save_pretrained(path)


@torch.no_grad()
def load_model_files(model: Any, path: str) -> None:
    """Load the weights :func:`save_model_files` wrote in ``path`` into ``model`` (in place)."""
    from safetensors.torch import load_file

    if callable(getattr(model, "save_pretrained", None)) and callable(getattr(type(model), "from_pretrained", None)):
        loaded = type(model).from_pretrained(path)
        model.load_state_dict(loaded.state_dict())
        del loaded
    else:
        model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    state: Mapping[str, Any],
    tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    tokenizer: Any = None,
    accelerator: Any = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Write a checkpoint folder atomically (see the module notes); return its path.

    ``state`` goes to ``trainer_state.json`` (it must hold ``global_step``, ``epoch`` and
    ``batches_in_epoch``); ``tensors[name]`` to ``<name>.safetensors``. With an ``accelerator``
    every process writes its RNG state and the main process the rest.

    Examples
    --------
    >>> save_checkpoint("out/checkpoint-10", model=m, optimizer=opt, scheduler=sched,
    ...                 state={"global_step": 10, "epoch": 0, "batches_in_epoch": 10})  # doctest: +SKIP
    'out/checkpoint-10'
    """
    from .._io import follow_umask, save_safetensors

    final = os.path.abspath(os.fspath(directory))
    parent, name = os.path.split(final)
    tmp = os.path.join(parent, f".tmp-{name}")
    main = accelerator is None or accelerator.is_main_process
    rank = 0 if accelerator is None else accelerator.process_index
    wait = (lambda: None) if accelerator is None else accelerator.wait_for_everyone
    if main:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    wait()
    try:
        rng_tensors, rng_meta = _get_rng_state()
        save_safetensors(rng_tensors, os.path.join(tmp, f"rng_state_{rank}.safetensors"))
        _write_json(os.path.join(tmp, f"rng_state_{rank}.json"), rng_meta)
        if main:
            save_model_files(_unwrap(model, accelerator), os.path.join(tmp, "model"), tokenizer=tokenizer,
                             **dict(model_kwargs or {}))
            opt_tensors, opt_meta = _optimizer_state_to_files(optimizer.state_dict())
            save_safetensors(opt_tensors, os.path.join(tmp, "optimizer.safetensors"))
            _write_json(os.path.join(tmp, "optimizer.json"), opt_meta)
            _write_json(os.path.join(tmp, "scheduler.json"), _jsonable(scheduler.state_dict()))
            for key, group in (tensors or {}).items():
                save_safetensors({k: v.detach().to("cpu").contiguous() for k, v in group.items()},
                                 os.path.join(tmp, f"{key}.safetensors"))
            full_state = {"format_version": _CHECKPOINT_FORMAT_VERSION,
                          "num_processes": 1 if accelerator is None else accelerator.num_processes, **state}
            for key in ("global_step", "epoch", "batches_in_epoch"):
                if key not in full_state:
                    raise ValueError(f"state must hold {key!r} (the data position)")
            _write_json(os.path.join(tmp, "trainer_state.json"), _jsonable(full_state))
            follow_umask(tmp)  # transformers and safetensors create their files 0600
        wait()
        if main:
            if os.path.exists(final):
                old = os.path.join(parent, f".old-{name}")
                if os.path.exists(old):
                    shutil.rmtree(old)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            logger.info("saved checkpoint %s", final)
    finally:
        if main and os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    wait()
    return final


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this process's RNG states from a checkpoint folder.

    Returns the ``trainer_state.json`` dict; extra tensors are read with :func:`load_tensors`.
    Raises ``ValueError`` naming what is missing from an incomplete folder.
    """
    from safetensors.torch import load_file

    ckpt = os.fspath(directory)
    state = load_checkpoint_state(ckpt)
    load_model_files(_unwrap(model, accelerator), os.path.join(ckpt, "model"))
    opt_tensors = load_file(os.path.join(ckpt, "optimizer.safetensors"))
    optimizer.load_state_dict(_optimizer_state_from_files(opt_tensors, _read_json(os.path.join(ckpt, "optimizer.json"))))
    scheduler.load_state_dict(_read_json(os.path.join(ckpt, "scheduler.json")))
    rank = 0 if accelerator is None else accelerator.process_index
    rng_st = os.path.join(ckpt, f"rng_state_{rank}.safetensors")
    rng_js = os.path.join(ckpt, f"rng_state_{rank}.json")
    if not os.path.exists(rng_st):
        logger.warning("checkpoint %s has no RNG state for process %d (saved with %s processes); using process 0's",
                       ckpt, rank, state.get("num_processes"))
        rng_st = os.path.join(ckpt, "rng_state_0.safetensors")
        rng_js = os.path.join(ckpt, "rng_state_0.json")
    if not (os.path.exists(rng_st) and os.path.exists(rng_js)):
        raise ValueError(
            f"resume_from_checkpoint: checkpoint {ckpt!r} is incomplete, "
            f"{os.path.basename(rng_st)!r} or {os.path.basename(rng_js)!r} is missing"
        )
    _set_rng_state(load_file(rng_st), _read_json(rng_js))
    n_proc = 1 if accelerator is None else accelerator.num_processes
    if int(state.get("num_processes", n_proc)) != n_proc:
        logger.warning("checkpoint %s was written by %s processes, resuming on %d: the data position is approximate",
                       ckpt, state.get("num_processes"), n_proc)
    return state


def load_tensors(directory: str | os.PathLike, name: str) -> dict[str, torch.Tensor] | None:
    """The tensors ``save_checkpoint(tensors={name: ...})`` wrote, or None when the file is absent."""
    from safetensors.torch import load_file

    path = os.path.join(os.fspath(directory), f"{name}.safetensors")
    return load_file(path) if os.path.exists(path) else None


def checkpoint_dir(output_dir: str, step: int) -> str:
    """``<output_dir>/checkpoint-<step>``."""
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{int(step)}")


def rotate_checkpoints(output_dir: str, limit: int | None) -> None:
    """Delete all but the newest ``limit`` checkpoints in ``output_dir`` (``None``: keep all)."""
    if not limit:
        return
    ckpts = _list_checkpoints(output_dir)
    for old in ckpts[: max(0, len(ckpts) - limit)]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(resume: str | os.PathLike | bool, output_dir: str) -> str:
    """The folder ``resume_from_checkpoint`` names: a path, or ``True`` for the newest in ``output_dir``."""
    if resume is True:
        ckpts = _list_checkpoints(output_dir)
        if not ckpts:
            raise ValueError(
                f"resume_from_checkpoint=True but {output_dir!r} holds no {CHECKPOINT_PREFIX}<step> folder"
            )
        return ckpts[-1]
    if isinstance(resume, bool) or not isinstance(resume, (str, os.PathLike)):
        raise TypeError(f"resume_from_checkpoint must be a path, True or None, got {type(resume).__name__}")
    return os.fspath(resume)

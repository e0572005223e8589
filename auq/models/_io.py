"""Checkpoint files: atomic directory writes, safetensors weights, checksums, safe loading.

Layout of a saved auq reward model directory::

    config.json                auq config (model type, kind, members, pooling, seeds, checksums ...)
    model.safetensors          weights (safetensors.torch.save_file; never pickled)
    backbone/config.json       the backbone's transformers config (rebuilt with AutoModel.from_config)
    tokenizer/...              the tokenizer's files (AutoTokenizer.from_pretrained)
    adapters/<member>/...      LoRA ensembles only: PEFT adapter_config.json + adapter_model.safetensors

Writes go into a temporary directory beside the target (mode ``0o777 & ~umask``; files in it
follow the umask too) and are moved in with ``os.replace``. When
the target already exists it is first renamed aside, the new directory is renamed in, files in the
old directory that the new one does not have (e.g. a trainer's own state) are moved over, and only
then is the old directory deleted. A crash while the new checkpoint is being written leaves the old
one untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import torch

from auq._io import follow_umask, make_temp_dir, remove_stale_temps, save_safetensors

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"
ADAPTERS_DIR = "adapters"


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk_size)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def atomic_write_dir(target: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Run ``writer(tmp_dir)`` and move ``tmp_dir`` to ``target`` atomically (see module docs)."""
    target = os.path.abspath(os.fspath(target))
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"save_directory {target!r} exists and is not a directory")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(target)
    remove_stale_temps(target)  # what a killed save left behind (only writers that are gone)
    tmp = make_temp_dir(target)  # mode 0o777 & ~umask, like any folder
    try:
        writer(tmp)
        follow_umask(tmp)  # libraries' own writers (safetensors, transformers, PEFT) create 0600 files
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not os.path.exists(target):
        os.replace(tmp, target)
        return
    old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for entry in os.listdir(old):  # keep files of the old directory that we did not write
        if not os.path.exists(os.path.join(target, entry)):
            os.replace(os.path.join(old, entry), os.path.join(target, entry))
    shutil.rmtree(old, ignore_errors=True)


def state_dict_for_saving(module: torch.nn.Module, exclude: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Return a contiguous CPU state dict; tensors sharing storage are cloned so safetensors accepts them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if exclude is not None and exclude(key):
            continue
        out[key] = value.detach().to("cpu").contiguous()
    # safetensors refuses any two tensors sharing memory: clone all but the first of each storage
    by_ptr: dict[int, str] = {}
    for key, tensor in out.items():
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in by_ptr and tensor.numel() > 0:
            out[key] = tensor.clone()
        else:
            by_ptr[ptr] = key
    return out


def save_weights(tensors: Mapping[str, torch.Tensor], path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors with ``safetensors.torch.save_file`` (atomically, mode ``0o666 & ~umask``)."""
    save_safetensors(tensors, path, metadata=dict(metadata or {"format": "pt"}))


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or corrupt file raises ``ValueError`` naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as err:  # SafetensorError, OSError, ...
        raise ValueError(
            f"could not read weights file {path!r} (truncated or corrupt safetensors file?): {err}"
        ) from None


def load_state_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str, *, allow_missing: Callable[[str], bool] | None = None) -> None:
    """Load ``state`` into ``module`` strictly; key or shape mismatches raise ``ValueError`` naming ``path``."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not (allow_missing and allow_missing(k))]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"weights file {path!r} does not match the model: {len(missing)} missing key(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise ValueError(f"weights file {path!r} has tensors of the wrong shape: {'; '.join(bad[:3])}")
    module.load_state_dict(dict(state), strict=False)


def write_json(obj: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def read_config(directory: str) -> dict[str, Any]:
    """Read ``config.json`` of a saved auq model; missing directory or file -> clear errors."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        hint = ""
        parent, name = os.path.split(os.path.abspath(directory))
        if os.path.isdir(parent):
            aside = sorted(e for e in os.listdir(parent) if e.startswith(f".{name}.old-"))
            if aside:  # a crash between the two renames of an overwrite
                hint = f"; the previous checkpoint was set aside as {os.path.join(parent, aside[-1])!r}"
        raise FileNotFoundError(f"model directory {directory!r} does not exist or is not a directory{hint}")
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{CONFIG_NAME} is missing in model directory {directory!r}; not an auq checkpoint"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or "auq_model_type" not in data:
        raise ValueError(f"{path!r} has no 'auq_model_type'; not an auq reward model checkpoint")
    return data


def check_files(directory: str, relative_paths: list[str]) -> None:
    """Raise ``FileNotFoundError`` naming the first expected file that is missing."""
    for rel in relative_paths:
        if not os.path.exists(os.path.join(directory, rel)):
            raise FileNotFoundError(f"checkpoint file {rel!r} is missing in model directory {directory!r}")


def verify_checksums(directory: str, checksums: Mapping[str, str]) -> None:
    """Compare files' SHA-256 with the digests stored in ``config.json``."""
    for rel, want in checksums.items():
        got = sha256_file(os.path.join(directory, rel))
        if got != want:
            raise ValueError(
                f"checkpoint file {rel!r} in {directory!r} does not match the checksum stored in "
                f"{CONFIG_NAME} (truncated, modified or from another save); pass verify=False to skip"
            )

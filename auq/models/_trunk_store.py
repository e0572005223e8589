"""A frozen trunk stored once, referenced by checksum from many checkpoints.

A heads ensemble on a frozen trunk changes only its heads while it trains, yet a self-contained
checkpoint holds the whole trunk again (87 MB for MiniLM; 12 checkpoints = 1.1 GB for a few KB of
heads). ``save_pretrained(directory, trunk_store=folder)`` instead writes the trunk's tensors
once into ``folder`` as ``trunk-<sha256[:16]>.safetensors`` (content-addressed: a second
checkpoint of the same trunk finds the file and writes nothing) and puts in ``directory``

* ``model.safetensors`` -- every tensor *except* the frozen trunk's (heads, posterior buffers ...);
* ``trunk.json`` -- the reference: the trunk file's path **relative to** ``directory``, its full
  SHA-256, the number of tensors and the byte size.

``from_pretrained`` follows the reference: a missing file raises ``FileNotFoundError`` and a file
whose SHA-256 differs raises ``ValueError``, both naming the file and the ``trunk.json`` that
points to it. The trunk's tensors are the frozen trunk modules' parameters and buffers,
written as they are (bit-exact reload); a trainable parameter inside a trunk module (the head of a
wrapped classifier) stays in ``model.safetensors``. Models whose trunk is trained are always
saved self-contained.

Nothing is pickled: the trunk file is safetensors, the reference JSON. Both are written atomically.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from auq._io import atomic_write_bytes

from . import _io

logger = logging.getLogger(__name__)

TRUNK_REFERENCE_NAME = "trunk.json"
TRUNK_FILE_PREFIX = "trunk-"
_FORMAT = 1


def trunk_keys(model: Any, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of ``state`` (the model's weights to save) that belong to its frozen trunk.

    A key belongs to the trunk when it lies under one of ``model._trunk_modules()`` and is not a
    trainable parameter; empty when the trunk is trained.
    """
    if not getattr(model, "trunk_frozen", False):
        return []
    names = {id(m): name for name, m in model.named_modules()}
    prefixes = [names[id(m)] + "." for m in model._trunk_modules() if id(m) in names and names[id(m)]]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return sorted(k for k in state if k not in trainable and any(k.startswith(p) for p in prefixes))


def _content_key(store: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (contiguous CPU tensors)."""
    h = hashlib.sha256(store.encode())
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def write_trunk(model: Any, store: str, tensors: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """Write ``tensors`` to ``store/trunk-<sha[:16]>.safetensors`` unless that file is there already.

    The tensors are hashed on every call (about 0.1 s for MiniLM; a frozen trunk changed in place,
    even through ``.data``, is noticed); while the hash equals the previous call's and its file
    exists, that file is reused without serialising the trunk again. Returns ``(absolute path,
    sha256 of the file)``.
    """
    from safetensors.torch import save

    store = os.path.abspath(store)
    key = _content_key(store, tensors)
    memo = getattr(model, "_auq_trunk_memo", None)
    if memo is not None and memo[0] == key and os.path.isfile(memo[1]):
        return memo[1], memo[2]
    data = save(dict(tensors), metadata={"format": "pt"})
    sha = hashlib.sha256(data).hexdigest()
    os.makedirs(store, exist_ok=True)
    path = os.path.join(store, f"{TRUNK_FILE_PREFIX}{sha[:16]}.safetensors")
    if os.path.isfile(path) and _io.sha256_file(path) == sha:
        logger.info("trunk already stored in %s", path)
    else:
        if os.path.exists(path):
            logger.warning("%s does not match its name's checksum; writing it again", path)
        atomic_write_bytes(path, data)
        logger.info("stored the frozen trunk (%d tensors, %.1f MB) in %s", len(tensors), len(data) / 1e6, path)
    object.__setattr__(model, "_auq_trunk_memo", (key, path, sha))
    return path, sha


def check_store_location(save_directory: str, store: str) -> None:
    """A trunk store inside the checkpoint folder would be replaced with it: refuse that."""
    target, store = os.path.abspath(save_directory), os.path.abspath(store)
    if store == target or store.startswith(target + os.sep):
        raise ValueError(
            f"trunk_store {store!r} lies inside save_directory {target!r}; give a folder outside it "
            "(e.g. beside the checkpoints), or trunk_store=None for a self-contained folder"
        )


def write_reference(directory: str, target_directory: str, path: str, sha: str, n_tensors: int) -> str:
    """Write ``trunk.json`` into ``directory`` (the temporary twin of ``target_directory``)."""
    rel = os.path.relpath(path, os.path.abspath(target_directory))
    _io.write_json(
        {"format": _FORMAT, "path": rel.replace(os.sep, "/"), "sha256": sha, "n_tensors": int(n_tensors),
         "bytes": os.path.getsize(path)},
        os.path.join(directory, TRUNK_REFERENCE_NAME),
    )
    return TRUNK_REFERENCE_NAME


def resolve_reference(directory: str, *, verify: bool = True) -> str | None:
    """The trunk file ``directory/trunk.json`` points to (``None`` without a reference).

    Raises
    ------
    FileNotFoundError
        The referenced trunk file is missing (the message names it and the reference).
    ValueError
        ``trunk.json`` is malformed, or (``verify=True``) the trunk file's SHA-256 differs from
        the one recorded.
    """
    ref = os.path.join(directory, TRUNK_REFERENCE_NAME)
    if not os.path.exists(ref):
        return None
    try:
        with open(ref, encoding="utf-8") as fh:
            data = json.load(fh)
        rel, sha = data["path"], data["sha256"]
        if not (isinstance(rel, str) and rel and isinstance(sha, str) and len(sha) == 64):
            raise ValueError("'path' must be a non-empty string and 'sha256' a 64-digit hex string")
        # only ever a relative path to a content-named trunk file: a reference cannot point a
        # loader at an arbitrary file
        name = rel.replace("\\", "/").rsplit("/", 1)[-1]
        if os.path.isabs(rel) or rel.startswith(("/", "\\")) or name != f"{TRUNK_FILE_PREFIX}{sha[:16]}.safetensors":
            raise ValueError(
                f"'path' must be a relative path to {TRUNK_FILE_PREFIX}{sha[:16]}.safetensors (the "
                f"content-named trunk file), got {rel!r}"
            )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"trunk reference {ref!r} is not valid ({type(err).__name__}: {err})") from None
    path = os.path.normpath(os.path.join(directory, rel))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"the trunk weights file {path!r} referenced by {ref!r} is missing: this checkpoint stores "
            "its frozen trunk once, beside the checkpoints (keep the folder it lies in, or save a "
            "self-contained copy with save_pretrained(directory) before moving the checkpoint)"
        )
    if verify:
        got = _io.sha256_file(path)
        if got != sha:
            raise ValueError(
                f"the trunk weights file {path!r} referenced by {ref!r} does not match its checksum "
                f"(SHA-256 {got[:16]}..., recorded {sha[:16]}...): it was modified, truncated or "
                "replaced by another trunk; pass verify=False to skip"
            )
    return path


_LOADING: contextvars.ContextVar[str | None] = contextvars.ContextVar("auq_trunk_file", default=None)


@contextlib.contextmanager
def loading(trunk_file: str | None):
    """While ``from_pretrained`` builds a model: the verified trunk file its weights refer to."""
    token = _LOADING.set(trunk_file)
    try:
        yield
    finally:
        _LOADING.reset(token)


def merge_trunk(state: dict[str, torch.Tensor], weights_path: str) -> dict[str, torch.Tensor]:
    """Add the tensors of the trunk file being loaded (see :func:`loading`) to ``state``; a no-op without one."""
    path = _LOADING.get()
    if path is None:
        return state
    trunk = _io.load_weights(path)
    both = sorted(set(trunk) & set(state))
    if both:
        raise ValueError(f"{weights_path!r} and the trunk file {path!r} both hold {both[:3]}")
    state.update(trunk)
    return state

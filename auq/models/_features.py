"""A per-text store of pooled trunk features: one trunk pass per (trunk, tokenizer, length, text).

A frozen trunk maps each (prompt, response) text to the same pooled feature vector whatever the
heads on top, their number, their seeds, the model kind or the data subset. :class:`FeatureCache`
keeps those vectors on disk, keyed by

* the **trunk**: a SHA-256 of the trunk modules' tensors (backbone weights only: heads, posterior
  buffers and reward offsets are not part of it), the pooling and the backbone's model type;
* the **tokenisation**: tokenizer class, vocabulary size and chat template, the collator class and
  ``max_length``; and the autocast precision the features were computed under;
* the **text**: a SHA-256 of each side's ``(prompt, response)``.

So a second model on the same trunk, a new seed, another member count, ``kind="laplace"`` after
``kind="heads"``, or a subset of the pairs already seen costs no trunk pass, and scoring pairs
that training has seen reads them back. Layout: ``<directory>/<trunk key>/index.json`` (text key
-> shard and row) and ``shard-*.safetensors`` (float32 ``features`` ``[n, H]``, or ``[n, K, H]``), each written to a
temporary file and renamed into place; nothing is ever unpickled.

Examples
--------
>>> cache = FeatureCache("rm/feature-cache")  # doctest: +SKIP
>>> fc, fr = cache.features(model, train)  # computes and stores  # doctest: +SKIP
>>> fc, fr = cache.features(other_model_same_trunk, train[:100])  # reads: 0 trunk passes  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["FeatureCache", "trunk_fingerprint", "text_key"]

_INDEX = "index.json"
_FORMAT = 1


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


def trunk_fingerprint(model: Any) -> str:
    """SHA-256 over the parameters and buffers of the model's trunk modules (``model._trunk_modules()``).

    Only the backbone's weights and buffers count: heads, Laplace posteriors and reward offsets
    may change while the features stay the same (a wrapped classifier's own head, inside its
    trunk module, is left out through ``model._fingerprint_skip()``). Hashed afresh on every call (about 0.1 s for
    MiniLM): no cheap signal tells reliably that weights were changed in place.
    """
    modules = model._trunk_modules() if hasattr(model, "_trunk_modules") else [model]
    # tensors of the trunk modules that the features do not depend on (a wrapped classifier's head)
    skip = model._fingerprint_skip() if hasattr(model, "_fingerprint_skip") else set()
    h = hashlib.sha256()
    for i, module in enumerate(modules):
        named = dict(module.named_parameters())
        named.update(dict(module.named_buffers()))
        for name in sorted(named):
            if f"{i}.{name}" in skip:
                continue
            t = named[name]
            h.update(f"{i}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tokenizer_id(tokenizer: Any) -> str:
    if tokenizer is None:
        return "none"
    h = hashlib.sha256()
    h.update(str(getattr(tokenizer, "chat_template", None) or "").encode())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    for attr in ("padding_side", "truncation_side", "special_tokens_map"):
        h.update(f"{attr}={getattr(tokenizer, attr, None)!r}".encode())
    # where the tokenizer was loaded from is not what it does: a checkpoint's own copy of the
    # backbone's tokenizer must share the backbone's features (the vocabulary is hashed above)
    kwargs = {
        k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items()
        if k != "name_or_path" and not k.endswith("_file")
    }  # fmt: skip
    h.update(json.dumps(kwargs, sort_keys=True, default=str).encode())
    return f"{type(tokenizer).__qualname__}:{len(tokenizer)}:{h.hexdigest()}"


def text_key(prompt: Any, response: Any) -> str:
    """SHA-256 of one side of a pair, ``(prompt, response)`` (strings or message lists)."""
    return hashlib.sha256(json.dumps([prompt, response], sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class FeatureCache:
    """Pooled trunk features of texts, stored once per trunk and text (see the module docs).

    Parameters
    ----------
    directory : str, path or None
        Folder of the store; ``None`` stores nothing: :meth:`features` encodes the pairs it is
        given (the features then depend on what the collator reads, not only on the texts).

    Examples
    --------
    >>> cache = FeatureCache(None)
    >>> cache.directory is None
    True
    """

    def __init__(self, directory: str | os.PathLike | None):
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path or None, got {type(directory).__name__}")
        self.directory = None if directory is None else os.fspath(directory)
        self._memory: dict[str, dict[str, np.ndarray]] = {}
        #: trunk passes (texts encoded) by this object, for tests and benchmarks
        self.n_encoded = 0

    # ------------------------------------------------------------------ keys
    def key(self, model: Any, collator: Any, precision: str = "no") -> str:
        """The store's folder name for ``model``'s trunk read through ``collator``."""
        h = hashlib.sha256()
        h.update(f"format={_FORMAT}".encode())
        h.update(trunk_fingerprint(model).encode())
        cfg = getattr(model, "config", None)
        h.update(f"pooling={getattr(cfg, 'pooling', '')}:{getattr(cfg, 'backbone_model_type', '')}".encode())
        # the layout of a text's features: one shared trunk ([H]) or one per member ([K, H]; an
        # "independent" ensemble keeps that layout with K = 1)
        n_trunks = len(model._trunk_modules()) if hasattr(model, "_trunk_modules") else 1
        per_member = n_trunks > 1 or getattr(cfg, "kind", "") in ("independent", "lora")
        h.update(f"trunks={n_trunks}:per_member={per_member}".encode())
        h.update(f"collator={type(collator).__qualname__}:{getattr(collator, 'max_length', None)}".encode())
        h.update(f"max_prompt_length={getattr(collator, 'max_prompt_length', None)}".encode())
        h.update(_tokenizer_id(getattr(collator, "tokenizer", None)).encode())
        h.update(f"precision={precision}".encode())
        return h.hexdigest()[:32]

    # ------------------------------------------------------------------ storage
    def _folder(self, key: str) -> str | None:
        return None if self.directory is None else os.path.join(self.directory, key)

    def _read_index(self, folder: str) -> dict[str, Any]:
        path = os.path.join(folder, _INDEX)
        if not os.path.exists(path):
            return {"format": _FORMAT, "rows": {}}
        try:
            with open(path, encoding="utf-8") as fh:
                index = json.load(fh)
            if not isinstance(index, dict) or not isinstance(index.get("rows"), dict):
                raise ValueError("no 'rows' mapping")
        except (OSError, ValueError) as err:
            logger.warning("feature cache index %s is unreadable (%s); recomputing", path, err)
            return {"format": _FORMAT, "rows": {}}
        return index

    def _load(self, key: str, wanted: list[str]) -> dict[str, np.ndarray]:
        found = {k: self._memory[key][k] for k in wanted if k in self._memory.get(key, {})}
        folder = self._folder(key)
        if folder is None or len(found) == len(set(wanted)):
            return found
        from safetensors.torch import load_file

        rows = self._read_index(folder)["rows"]
        by_shard: dict[str, list[tuple[str, int]]] = {}
        for k in set(wanted) - set(found):
            if k in rows:
                shard, row = rows[k]
                by_shard.setdefault(shard, []).append((k, int(row)))
        for shard, items in by_shard.items():
            path = os.path.join(folder, shard)
            try:
                feats = load_file(path)["features"].numpy()
            except Exception as err:  # a missing or truncated shard: recompute its texts
                logger.warning("feature cache shard %s is unreadable (%s); recomputing its texts", path, err)
                continue
            for k, row in items:
                if 0 <= row < feats.shape[0]:
                    found[k] = feats[row]
        self._memory.setdefault(key, {}).update(found)
        return found

    def _store(self, key: str, new: dict[str, np.ndarray]) -> None:
        self._memory.setdefault(key, {}).update(new)
        folder = self._folder(key)
        if folder is None or not new:
            return
        from auq._io import atomic_write_json, save_safetensors

        os.makedirs(folder, exist_ok=True)
        names = list(new)
        shard = f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        features = torch.from_numpy(np.stack([new[k] for k in names]).astype(np.float32))
        save_safetensors({"features": features}, os.path.join(folder, shard))  # atomic, umask modes
        with _locked(os.path.join(folder, ".index.lock")):  # merge with other writers' rows
            index = self._read_index(folder)
            index["rows"].update({k: [shard, i] for i, k in enumerate(names)})
            atomic_write_json(os.path.join(folder, _INDEX), index, indent=0)

    # ------------------------------------------------------------------ public
    def features(
        self,
        model: Any,
        dataset: Any,
        *,
        collator: Any = None,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        progress: bool = True,
        precision: str = "no",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features of the chosen and the rejected side of every pair of ``dataset``.

        Texts already in the store are read back; the pairs with a missing side go through the
        trunk once (:func:`auq.models.encode_dataset`, longest pairs first) and are stored.

        Parameters
        ----------
        model : auq reward model
            Its trunk computes the features (``encode``).
        dataset : PreferenceDataset or sequence of example dicts
        collator : PreferenceCollator, optional
            Default ``model.make_collator()``.
        batch_size, device, progress :
            As for :func:`auq.models.encode_dataset`.
        precision : str, default "no"
            The autocast precision the caller runs ``encode`` under (part of the key).

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            float32 ``[n_pairs, H]`` features of the chosen and of the rejected responses
            (``[n_pairs, K, H]`` for models with one trunk per member).
        """
        from ._scoring import encode_dataset

        if collator is None:
            collator = model.make_collator()
        if self.directory is None:  # nothing to share: one pass over the pairs as they are
            fc, fr = encode_dataset(
                model, dataset, batch_size=batch_size, device=device, progress=progress,
                collator=collator, per_member=True,
            )
            self.n_encoded += 2 * len(dataset)
            return fc.astype(np.float32), fr.astype(np.float32)
        key = self.key(model, collator, precision)
        n = len(dataset)
        examples = [dataset[i] for i in range(n)]
        keys = [(text_key(ex["prompt"], ex["chosen"]), text_key(ex["prompt"], ex["rejected"])) for ex in examples]
        flat = [k for pair in keys for k in pair]
        found = self._load(key, flat)
        missing = [i for i, (kc, kr) in enumerate(keys) if kc not in found or kr not in found]
        if missing:
            subset = [examples[i] for i in missing]
            fc, fr = encode_dataset(
                model, _Rows(subset), batch_size=batch_size, device=device, progress=progress,
                collator=collator, per_member=True,
            )
            self.n_encoded += 2 * len(missing)
            new = {}
            for j, i in enumerate(missing):
                new[keys[i][0]] = fc[j].astype(np.float32)
                new[keys[i][1]] = fr[j].astype(np.float32)
            try:
                self._store(key, new)
            except OSError as err:  # a read-only or full cache folder: the features are still used
                logger.warning("feature cache %s: could not store new features (%s)", self.directory, err)
                self._memory.setdefault(key, {}).update(new)
            found.update(new)
            logger.info("feature cache: %d of %d pairs encoded, %d read back", len(missing), n, n - len(missing))
        fc = np.stack([found[kc] for kc, _ in keys]).astype(np.float32, copy=False)
        fr = np.stack([found[kr] for _, kr in keys]).astype(np.float32, copy=False)
        return fc, fr


def cached_pair_features(
    feature_cache: Any, model: Any, dataset: Any, *, collator: Any, batch_size: int, device: Any, progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`FeatureCache.features` of ``feature_cache`` (a folder, or a :class:`FeatureCache`)."""
    cache = feature_cache if isinstance(feature_cache, FeatureCache) else FeatureCache(feature_cache)
    return cache.features(model, dataset, collator=collator, batch_size=batch_size, device=device, progress=progress)


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class _Rows:
    """A list of example dicts seen as a dataset (``len``, indexing, ``chosen``/``rejected`` for ordering)."""

    def __init__(self, rows: list[Any]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.rows[i]

"""The preference dataset type shared by every part of auq.

A :class:`PreferenceDataset` holds preference pairs as columns: a ``prompt`` and two responses,
``chosen`` (the preferred one) and ``rejected``, plus optional per-pair soft labels ``targets``
(q = P(chosen preferred)), annotator ``votes`` (counts ``[n, 2]`` for chosen and rejected),
sample ``weights`` and stable ``ids``.

Two forms are supported, and one dataset holds one form:

* **text**: ``prompt`` is a string (may be ``""``), ``chosen`` and ``rejected`` are the responses
  only (non-empty strings). The model sees ``prompt + response``.
* **conversational** (TRL's conversational format): ``prompt`` is a list of messages (possibly
  empty) and ``chosen`` / ``rejected`` are non-empty lists of messages, each message a dict with
  string ``"role"`` and ``"content"``. The collator renders ``prompt + response`` with the
  tokenizer's chat template.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from auq._checks import as_float_array, check_labels, check_texts, check_weights

logger = logging.getLogger(__name__)

__all__ = ["PreferenceDataset", "Example"]

#: The example dict returned by ``dataset[i]`` and consumed by :class:`~auq.data.PreferenceCollator`:
#: keys ``prompt``, ``chosen``, ``rejected``, ``target`` (float), ``weight`` (float), ``index`` (int).
Example = dict

def _is_messages(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _check_messages(msgs: Any, name: str, *, allow_empty: bool) -> list[dict[str, str]]:
    if not isinstance(msgs, (list, tuple)):
        raise TypeError(
            f"{name} must be a list of messages (dicts with 'role' and 'content') like the rest "
            f"of the conversational dataset, got {type(msgs).__name__}"
        )
    if not msgs and not allow_empty:
        raise ValueError(f"{name} is an empty list of messages")
    out = []
    for j, m in enumerate(msgs):
        if not isinstance(m, Mapping):
            raise TypeError(f"{name}[{j}] must be a message dict, got {type(m).__name__}")
        for key in ("role", "content"):
            if key not in m:
                raise ValueError(f"{name}[{j}] has no {key!r} key; it has {sorted(m)}")
            if not isinstance(m[key], str):
                raise TypeError(f"{name}[{j}][{key!r}] must be a string, got {type(m[key]).__name__}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _to_list(x: Any, name: str) -> list:
    if isinstance(x, (str, bytes, Mapping)):
        raise TypeError(f"{name} must be a sequence of texts, got {type(x).__name__}")
    if hasattr(x, "tolist") and not isinstance(x, list):
        x = x.tolist()
    try:
        return list(x)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of texts, got {type(x).__name__}") from None


def _normalise_ids(ids: Any, n: int) -> list[Any]:
    if ids is None:
        return list(range(n))
    ids = _to_list(ids, "ids")
    if len(ids) != n:
        raise ValueError(f"ids must have length {n} (one per pair), got {len(ids)}")
    out = []
    for i, v in enumerate(ids):
        if isinstance(v, bool):
            raise TypeError(f"ids[{i}] must be a string or an integer, got bool")
        if isinstance(v, numbers.Integral):
            out.append(int(v))
        elif isinstance(v, str):
            out.append(v)
        else:
            raise TypeError(f"ids[{i}] must be a string or an integer, got {type(v).__name__}")
    if len(set(out)) != n:
        seen: set[Any] = set()
        dup = next(v for v in out if v in seen or seen.add(v))  # type: ignore[func-returns-value]
        raise ValueError(f"ids must be unique, got {dup!r} more than once")
    return out


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"cannot fingerprint a {type(x).__name__}")


class PreferenceDataset:
    """Preference pairs ``(prompt, chosen, rejected)`` with optional soft labels, votes, weights.

    Parameters
    ----------
    prompt : sequence of str or of message lists
        The prompt of each pair (``""`` or ``[]`` when there is none).
    chosen, rejected : sequence of str or of message lists
        The preferred and the other response, **without** the prompt.
    targets : array-like of float in [0, 1], optional
        Soft label q = P(chosen preferred) per pair. When absent and ``votes`` are given,
        ``targets = votes[:, 0] / votes.sum(1)``; when both are absent the label is 1 (hard).
    votes : array-like ``[n, 2]``, optional
        Annotator counts (for chosen, for rejected); non-negative, each row with a positive sum.
    weights : array-like of float, optional
        Non-negative per-pair sample weights.
    ids : sequence of str or int, optional
        Unique pair identifiers, kept through :meth:`select` and splits; default ``0..n-1``.

    Notes
    -----
    The dataset is immutable by convention: every operation returns a new dataset. Indexing with an
    int gives an example dict (``prompt``, ``chosen``, ``rejected``, ``target``, ``weight``,
    ``index``) where ``index`` is the position in *this* dataset, ``target`` and ``weight`` default
    to 1.0. Indexing with a slice or a sequence of ints gives a new dataset.

    Examples
    --------
    >>> ds = PreferenceDataset(["2+2="], [" 4"], [" 5"], targets=[0.9])
    >>> ds[0]["target"], len(ds)
    (0.9, 1)
    """

    def __init__(
        self,
        prompt: Sequence[Any],
        chosen: Sequence[Any],
        rejected: Sequence[Any],
        *,
        targets: Any = None,
        votes: Any = None,
        weights: Any = None,
        ids: Sequence[Any] | None = None,
    ) -> None:
        prompt = _to_list(prompt, "prompt")
        chosen = _to_list(chosen, "chosen")
        rejected = _to_list(rejected, "rejected")
        n = len(chosen)
        if n == 0:
            raise ValueError("chosen is empty; a PreferenceDataset needs at least one pair")
        for name, col in (("prompt", prompt), ("rejected", rejected)):
            if len(col) != n:
                raise ValueError(
                    f"{name} and chosen must have the same length, got {len(col)} and {n}"
                )
        conversational = any(_is_messages(x) for x in (chosen[0], rejected[0], prompt[0]))
        if conversational:
            self._prompt = [
                _check_messages(p, f"prompt[{i}]", allow_empty=True) for i, p in enumerate(prompt)
            ]
            self._chosen = [
                _check_messages(c, f"chosen[{i}]", allow_empty=False) for i, c in enumerate(chosen)
            ]
            self._rejected = [
                _check_messages(r, f"rejected[{i}]", allow_empty=False)
                for i, r in enumerate(rejected)
            ]
        else:
            self._prompt = check_texts(prompt, "prompt", allow_empty=True, allow_no_rows=True)
            self._chosen = check_texts(chosen, "chosen", allow_blank=True, allow_no_rows=True)
            self._rejected = check_texts(rejected, "rejected", allow_blank=True, allow_no_rows=True)
        self._conversational = conversational

        self._votes = None
        if votes is not None:
            v = as_float_array(votes, "votes", ndim=2)
            if v.shape != (n, 2):
                raise ValueError(
                    f"votes must have shape ({n}, 2) (counts for chosen, rejected), got {v.shape}"
                )
            if (v < 0).any():
                raise ValueError(f"votes must be non-negative counts, got {float(v.min())!r}")
            if (v.sum(1) <= 0).any():
                row = int(np.flatnonzero(v.sum(1) <= 0)[0])
                raise ValueError(f"votes[{row}] has no votes; every pair needs at least one")
            v.setflags(write=False)
            self._votes = v
        self._targets = None
        if targets is not None:
            t = as_float_array(targets, "targets", ndim=1)
            if t.shape[0] != n:
                raise ValueError(f"targets must have length {n} (one per pair), got {t.shape[0]}")
            check_labels(t, "targets")
            self._targets = np.array(t, dtype=np.float64)
        elif self._votes is not None:
            self._targets = self._votes[:, 0] / self._votes.sum(1)
        if self._targets is not None:
            self._targets.setflags(write=False)
        self._weights = None
        if weights is not None:
            w = np.array(check_weights(weights, "weights", n), dtype=np.float64)
            w.setflags(write=False)
            self._weights = w
        self._ids = _normalise_ids(ids, n)
        #: The layout a loader detected (``"standard"``, ``"hh_rlhf"``, ...); None when built directly.
        self.format: str | None = None

    # ------------------------------------------------------------------ columns
    @property
    def prompt(self) -> list[Any]:
        """Prompts (str, or message lists for conversational data)."""
        return self._prompt

    @property
    def chosen(self) -> list[Any]:
        """Preferred responses (without the prompt)."""
        return self._chosen

    @property
    def rejected(self) -> list[Any]:
        """Dispreferred responses (without the prompt)."""
        return self._rejected

    @property
    def targets(self) -> np.ndarray | None:
        """Soft labels q = P(chosen preferred), float64 ``[n]``, or None (hard labels, q = 1)."""
        return self._targets

    @property
    def votes(self) -> np.ndarray | None:
        """Annotator counts ``[n, 2]`` (chosen, rejected), or None."""
        return self._votes

    @property
    def weights(self) -> np.ndarray | None:
        """Per-pair weights, float64 ``[n]``, or None."""
        return self._weights

    @property
    def ids(self) -> list[Any]:
        """Unique pair identifiers (kept through ``select`` and splits)."""
        return self._ids

    @property
    def is_conversational(self) -> bool:
        """True when prompts and responses are lists of chat messages."""
        return self._conversational

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._chosen)

    def __repr__(self) -> str:
        extra = [name for name in ("targets", "votes", "weights") if getattr(self, name) is not None]
        form = "conversational" if self._conversational else "text"
        return f"PreferenceDataset(n_pairs={len(self)}, form={form!r}, extra={extra})"

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            n = len(self)
            i = int(key)
            if i < -n or i >= n:
                raise IndexError(f"index {i} is out of range for a dataset of {n} pairs")
            i %= n
            return {
                "prompt": self._prompt[i],
                "chosen": self._chosen[i],
                "rejected": self._rejected[i],
                "target": 1.0 if self._targets is None else float(self._targets[i]),
                "weight": 1.0 if self._weights is None else float(self._weights[i]),
                "index": i,
            }
        if isinstance(key, slice):
            return self.select(range(len(self))[key])
        return self.select(key)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def select(self, indices: Any) -> PreferenceDataset:
        """Return a new dataset holding the pairs at ``indices`` (in that order; ids are kept).

        Examples
        --------
        >>> ds = PreferenceDataset(["", ""], ["a", "b"], ["c", "d"])
        >>> ds.select([1]).chosen
        ['b']
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"indices as a boolean mask must have length {len(self)}")
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            raise ValueError("indices is empty; a PreferenceDataset needs at least one pair")
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError("indices must be a 1-D sequence of integers or a boolean mask")
        n = len(self)
        if (idx < -n).any() or (idx >= n).any():
            raise IndexError(f"indices out of range for a dataset of {n} pairs")
        idx = idx % n
        pick = idx.tolist()
        out = PreferenceDataset(
            [self._prompt[i] for i in pick],
            [self._chosen[i] for i in pick],
            [self._rejected[i] for i in pick],
            targets=None if self._targets is None else self._targets[idx],
            votes=None if self._votes is None else self._votes[idx],
            weights=None if self._weights is None else self._weights[idx],
            ids=[self._ids[i] for i in pick],
        )
        out.format = self.format
        return out

    _COLUMNS = ("targets", "votes", "weights", "ids")

    def with_columns(self, **columns: Any) -> PreferenceDataset:
        """Return a new dataset with the per-pair columns given replaced (the texts are shared).

        Parameters
        ----------
        **columns
            Any of ``targets``, ``votes``, ``weights``, ``ids``: a new column (checked as the
            constructor checks it) or ``None`` to drop it. Columns not given are kept.

        Examples
        --------
        >>> ds = PreferenceDataset(["", ""], ["a", "b"], ["c", "d"])
        >>> ds.with_columns(weights=[0.5, 2.0]).weights.tolist()
        [0.5, 2.0]
        """
        unknown = sorted(set(columns) - set(self._COLUMNS))
        if unknown:
            raise TypeError(f"with_columns: unknown column(s) {unknown}; expected some of {list(self._COLUMNS)}")
        kept = {"targets": self._targets, "votes": self._votes, "weights": self._weights, "ids": self._ids}
        kept.update(columns)
        out = PreferenceDataset(self._prompt, self._chosen, self._rejected, **kept)
        out.format = self.format
        return out

    def shuffle(self, seed: int = 0) -> PreferenceDataset:
        """Return the pairs in a random order drawn from ``seed``."""
        rng = np.random.default_rng(seed)
        return self.select(rng.permutation(len(self)))

    def train_test_split(
        self, test_size: float | int = 0.2, seed: int = 0
    ) -> tuple[PreferenceDataset, PreferenceDataset]:
        """Split at random into ``(train, test)``.

        Parameters
        ----------
        test_size : float in (0, 1) or int
            Fraction of pairs (rounded up) or number of pairs in the test part.
        seed : int
            Seed of the permutation.

        Examples
        --------
        >>> ds = PreferenceDataset([""] * 10, ["a"] * 10, ["b"] * 10)
        >>> [len(p) for p in ds.train_test_split(0.2)]
        [8, 2]
        """
        n = len(self)
        if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
            n_test = int(test_size)
        elif isinstance(test_size, numbers.Real) and not isinstance(test_size, bool):
            if not 0.0 < float(test_size) < 1.0:
                raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size}")
            n_test = math.ceil(float(test_size) * n)
        else:
            raise TypeError(f"test_size must be a float or an int, got {type(test_size).__name__}")
        if not 1 <= n_test <= n - 1:
            raise ValueError(
                f"test_size={test_size} leaves {n_test} test and {n - n_test} train pairs out of "
                f"{n}; both parts need at least one"
            )
        perm = np.random.default_rng(seed).permutation(n)
        return self.select(np.sort(perm[n_test:])), self.select(np.sort(perm[:n_test]))

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, list[Any]]:
        """Columns as a dict of lists: ``prompt, chosen, rejected, id`` and, when present,
        ``target``, ``votes_chosen``, ``votes_rejected``, ``weight``."""
        out: dict[str, list[Any]] = {
            "prompt": list(self._prompt),
            "chosen": list(self._chosen),
            "rejected": list(self._rejected),
            "id": list(self._ids),
        }
        if self._targets is not None:
            out["target"] = self._targets.tolist()
        if self._votes is not None:
            out["votes_chosen"] = self._votes[:, 0].tolist()
            out["votes_rejected"] = self._votes[:, 1].tolist()
        if self._weights is not None:
            out["weight"] = self._weights.tolist()
        return out

    def to_pandas(self) -> Any:
        """One row per pair, columns as in :meth:`to_dict`.

        Examples
        --------
        >>> PreferenceDataset([""], ["a"], ["b"]).to_pandas().columns.tolist()
        ['prompt', 'chosen', 'rejected', 'id']
        """
        import pandas as pd

        return pd.DataFrame(self.to_dict())

    def to_hf(self) -> Any:
        """A :class:`datasets.Dataset` with the columns of :meth:`to_dict`."""
        import datasets

        return datasets.Dataset.from_dict(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[Any]], **columns: Any) -> PreferenceDataset:
        """Build from a dict of columns, detecting the format as :func:`auq.data.load_preferences` does.

        ``columns`` are the column-name keywords of :func:`~auq.data.load_preferences`
        (``prompt_column``, ``chosen_column``, ...). The output of :meth:`to_dict` reads back exactly.
        """
        from auq.data._formats import columns_to_dataset

        return columns_to_dataset(data, source="data", **columns)

    @classmethod
    def from_pandas(cls, df: Any, **columns: Any) -> PreferenceDataset:
        """Build from a pandas DataFrame (see :meth:`from_dict`)."""
        from auq.data._formats import columns_to_dataset

        return columns_to_dataset(
            {str(c): df[c].tolist() for c in df.columns}, source="DataFrame", **columns
        )

    @classmethod
    def from_hf(cls, dataset: Any, **columns: Any) -> PreferenceDataset:
        """Build from a :class:`datasets.Dataset` (see :meth:`from_dict`)."""
        from auq.data._formats import columns_to_dataset

        return columns_to_dataset(dataset.to_dict(), source="Dataset", **columns)

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the contents (texts, labels, votes, weights, ids), stable across runs.

        Examples
        --------
        >>> a = PreferenceDataset([""], ["a"], ["b"])
        >>> a.fingerprint() == PreferenceDataset([""], ["a"], ["b"]).fingerprint()
        True
        """
        payload = {
            "version": 1,
            "prompt": self._prompt,
            "chosen": self._chosen,
            "rejected": self._rejected,
            "targets": None if self._targets is None else self._targets.tolist(),
            "votes": None if self._votes is None else self._votes.tolist(),
            "weights": None if self._weights is None else self._weights.tolist(),
            "ids": self._ids,
        }
        blob = json.dumps(
            payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def check_pairs(dataset: Any, name: str = "dataset") -> Any:
    """Check that ``dataset`` holds preference pairs to score; return it unchanged.

    A :class:`PreferenceDataset` passes. So does a sequence of example dicts each with ``chosen``
    and ``rejected`` (``prompt`` optional). A string or path (load the file first), a dict of
    columns (wrap it in :func:`~auq.data.load_preferences`) or an example without ``rejected``
    raise ``TypeError``/``ValueError`` naming ``name`` and what is wrong.

    Examples
    --------
    >>> check_pairs("pairs.jsonl")
    Traceback (most recent call last):
    ...
    TypeError: dataset must be a PreferenceDataset, got the str 'pairs.jsonl'; load it first: auq.data.load_preferences('pairs.jsonl')
    """
    import os

    if isinstance(dataset, PreferenceDataset):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a PreferenceDataset, got the {type(dataset).__name__} {os.fspath(dataset)!r}; "
            f"load it first: auq.data.load_preferences({os.fspath(dataset)!r})"
        )
    if isinstance(dataset, Mapping):
        raise TypeError(
            f"{name} must be a PreferenceDataset, got a dict with keys {sorted(map(str, dataset))[:6]}; "
            "wrap a dict of columns in auq.data.load_preferences(columns)"
        )
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"{name} must be a PreferenceDataset, got {type(dataset).__name__}")
    for i in range(len(dataset)):
        ex = dataset[i]
        if not isinstance(ex, Mapping):
            raise TypeError(f"{name}[{i}] must be an example dict, got {type(ex).__name__}")
        missing = [k for k in ("chosen", "rejected") if k not in ex]
        if missing:
            raise ValueError(
                f"{name}[{i}] has no {' or '.join(repr(k) for k in missing)} field; every example "
                f"needs 'chosen' and 'rejected' (it has {sorted(map(str, ex))})"
            )
    return dataset

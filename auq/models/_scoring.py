"""Scoring preference pairs with a reward model (member rewards, feature-density OOD scores)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from auq._checks import as_float_array, check_device, check_int, check_labels

from ._backbone import default_device

logger = logging.getLogger(__name__)

__all__ = ["Predictions", "score", "score_features", "encode_dataset"]

_PAIR_COLUMNS = (
    "prob", "total", "aleatoric", "epistemic", "margin_mean", "margin_std",
    "reward_mean_chosen", "reward_std_chosen", "reward_mean_rejected", "reward_std_rejected",
)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Member rewards of scored preference pairs (the project's currency).

    Attributes
    ----------
    rewards_chosen, rewards_rejected : numpy.ndarray, float64, shape [n_pairs, n_members]
        Reward of each member (ensemble member or MC-dropout sample) for each side.
    targets : numpy.ndarray, float64, shape [n_pairs]
        P(chosen preferred) labels of the pairs (1.0 for hard labels).
    ids : list
        The pairs' identifiers (``dataset.ids``).
    ood_chosen, ood_rejected : numpy.ndarray, float64, shape [n_pairs], optional
        Feature-density out-of-distribution score of each response (the model's
        :class:`~auq.models.FeatureDensity` percentile: 0.99 means farther from the training
        features than 99% of the training responses). ``None`` when the model has no density.
    noise_var_chosen, noise_var_rejected : numpy.ndarray, float64, shape [n_pairs, n_members], optional
        Learned aleatoric reward variance of each response and member (heteroscedastic heads);
        ``None`` for models without a variance head.
    weights : numpy.ndarray, float64, shape [n_pairs], optional
        Per-pair weights of the scored dataset (its ``weights`` column, as the trainer's
        :meth:`~auq.training.RewardModelTrainer.predict` carries them); ``None`` from :func:`score`.
    anchored : bool, default False
        True when each member's rewards are already centred on that member's mean reward over
        the *training* responses (the model's ``reward_offsets``); per-response statistics are
        then taken as they are. False: members are centred over the scored pairs (the rewards of
        a Bradley-Terry model are defined only up to a per-member constant).

    Examples
    --------
    >>> p = Predictions(np.array([[1.0, 2.0]]), np.array([[0.0, 0.5]]), np.array([1.0]), ["a"])
    >>> p.n_members, round(float(p.decompose().prob[0]), 3)
    (2, 0.774)
    """

    rewards_chosen: np.ndarray
    rewards_rejected: np.ndarray
    targets: np.ndarray
    ids: list
    ood_chosen: np.ndarray | None = None
    ood_rejected: np.ndarray | None = None
    noise_var_chosen: np.ndarray | None = None
    noise_var_rejected: np.ndarray | None = None
    anchored: bool = False
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        c = as_float_array(self.rewards_chosen, "rewards_chosen", ndim=(1, 2))
        r = as_float_array(self.rewards_rejected, "rewards_rejected", ndim=(1, 2))
        c = c.reshape(-1, 1) if c.ndim == 1 else c
        r = r.reshape(-1, 1) if r.ndim == 1 else r
        if c.shape != r.shape:
            raise ValueError(
                f"rewards_chosen and rewards_rejected must have the same shape, got {c.shape} and {r.shape}"
            )
        t = as_float_array(self.targets, "targets", ndim=1)
        check_labels(t, "targets")  # P(chosen preferred): in [0, 1]
        if t.shape[0] != c.shape[0]:
            raise ValueError(f"targets has {t.shape[0]} values for {c.shape[0]} pairs")
        ids = list(self.ids)
        if len(ids) != c.shape[0]:
            raise ValueError(f"ids has {len(ids)} values for {c.shape[0]} pairs")
        object.__setattr__(self, "rewards_chosen", c)
        object.__setattr__(self, "rewards_rejected", r)
        object.__setattr__(self, "targets", t)
        object.__setattr__(self, "ids", ids)
        if (self.ood_chosen is None) != (self.ood_rejected is None):
            raise ValueError("ood_chosen and ood_rejected must be given together")
        for name in ("ood_chosen", "ood_rejected"):
            if getattr(self, name) is not None:
                v = as_float_array(getattr(self, name), name, ndim=1)
                if v.shape[0] != c.shape[0]:
                    raise ValueError(f"{name} has {v.shape[0]} values for {c.shape[0]} pairs")
                object.__setattr__(self, name, v)
        if (self.noise_var_chosen is None) != (self.noise_var_rejected is None):
            raise ValueError("noise_var_chosen and noise_var_rejected must be given together")
        for name in ("noise_var_chosen", "noise_var_rejected"):
            if getattr(self, name) is not None:
                v = as_float_array(getattr(self, name), name, ndim=(1, 2))
                v = v.reshape(-1, 1) if v.ndim == 1 else v
                if v.shape != c.shape:
                    raise ValueError(f"{name} must have the rewards' shape {c.shape}, got {v.shape}")
                if (v < 0).any():
                    raise ValueError(f"{name} must be non-negative (a variance)")
                object.__setattr__(self, name, v)
        if self.weights is not None:
            w = as_float_array(self.weights, "weights", ndim=1)
            if w.shape[0] != c.shape[0]:
                raise ValueError(f"weights has {w.shape[0]} values for {c.shape[0]} pairs")
            if (w < 0).any():
                raise ValueError(f"weights must be non-negative, got a value of {float(w.min())!r}")
            object.__setattr__(self, "weights", w)
        if not isinstance(self.anchored, (bool, np.bool_)):
            raise TypeError(f"anchored must be a bool, got {type(self.anchored).__name__}")
        object.__setattr__(self, "anchored", bool(self.anchored))

    def __len__(self) -> int:
        return int(self.rewards_chosen.shape[0])

    @property
    def n_members(self) -> int:
        """Number of reward columns."""
        return int(self.rewards_chosen.shape[1])

    @property
    def margins(self) -> np.ndarray:
        """``rewards_chosen - rewards_rejected``, shape ``[n_pairs, n_members]``."""
        return self.rewards_chosen - self.rewards_rejected

    def decompose(self, unit: str = "nats"):
        """Entropy and variance decomposition (:func:`auq.estimators.decompose`)."""
        from auq.estimators import decompose

        noise = None if self.noise_var_chosen is None else self.noise_var_chosen + self.noise_var_rejected
        return decompose(self.rewards_chosen, self.rewards_rejected, unit=unit, noise_var=noise)

    def reward_stats(self):
        """Per-pair reward mean/std over members, members centred (:func:`auq.estimators.pair_reward_stats`)."""
        from auq.estimators import pair_reward_stats

        return pair_reward_stats(self.rewards_chosen, self.rewards_rejected, center=not self.anchored)

    @property
    def ood(self) -> np.ndarray | None:
        """Per-pair out-of-distribution score: the larger of the two responses' (or None)."""
        if self.ood_chosen is None:
            return None
        return np.maximum(self.ood_chosen, self.ood_rejected)

    def to_pandas(self):
        """One row per pair: ``id``, ``prob``, ``total``, ``aleatoric``, ``epistemic``,
        ``margin_mean``, ``margin_std``, ``reward_mean_chosen``, ``reward_std_chosen``,
        ``reward_mean_rejected``, ``reward_std_rejected`` (members centred) and ``target``
        (then ``weight`` when the predictions carry weights).

        The entropy columns answer *how uncertain is this preference*; the per-response reward
        std columns answer *do the members agree about each response* (the better signal for
        out-of-domain responses).
        """
        import pandas as pd

        dec = self.decompose().to_pandas()
        stats = self.reward_stats().to_pandas(prefix="reward_")
        df = pd.concat([dec.reset_index(drop=True), stats.reset_index(drop=True)], axis=1)
        df = df[list(_PAIR_COLUMNS)]
        df.insert(0, "id", self.ids)
        if self.ood_chosen is not None:
            df["ood_chosen"] = self.ood_chosen
            df["ood_rejected"] = self.ood_rejected
            df["ood"] = self.ood
        df["target"] = self.targets
        if self.weights is not None:
            df["weight"] = self.weights
        return df

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_pandas` plus the raw member rewards to ``.csv`` or ``.parquet``.

        Raw rewards go to columns ``reward_chosen_0 ...`` and ``reward_rejected_0 ...`` so that
        :meth:`load` restores the predictions exactly.
        """
        df = self._frame()
        path = os.fspath(path)
        if path.endswith(".csv"):
            df.to_csv(path, index=False, float_format="%.17g")
        elif path.endswith(".parquet"):
            df.to_parquet(path, index=False)
        else:
            raise ValueError(f"path must end in .csv or .parquet, got {path!r}")

    def _frame(self):
        df = self.to_pandas()
        for k in range(self.n_members):
            df[f"reward_chosen_{k}"] = self.rewards_chosen[:, k]
        for k in range(self.n_members):
            df[f"reward_rejected_{k}"] = self.rewards_rejected[:, k]
        if self.noise_var_chosen is not None:
            for k in range(self.n_members):
                df[f"noise_var_chosen_{k}"] = self.noise_var_chosen[:, k]
            for k in range(self.n_members):
                df[f"noise_var_rejected_{k}"] = self.noise_var_rejected[:, k]
        df["anchored"] = self.anchored
        return df

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictions:
        """Read predictions written by :meth:`save`."""
        import pandas as pd

        path = os.fspath(path)
        if path.endswith(".csv"):
            df = pd.read_csv(path)
        elif path.endswith(".parquet"):
            df = pd.read_parquet(path)
        else:
            raise ValueError(f"path must end in .csv or .parquet, got {path!r}")
        cc = sorted((c for c in df.columns if c.startswith("reward_chosen_")), key=lambda c: int(c.rsplit("_", 1)[1]))
        rc = sorted((c for c in df.columns if c.startswith("reward_rejected_")), key=lambda c: int(c.rsplit("_", 1)[1]))
        if not cc or len(cc) != len(rc):
            raise ValueError(f"{path!r} has no reward_chosen_k / reward_rejected_k columns; not saved by Predictions.save")
        kw: dict[str, Any] = {}
        if "ood_chosen" in df.columns and "ood_rejected" in df.columns:
            kw["ood_chosen"] = df["ood_chosen"].to_numpy(np.float64)
            kw["ood_rejected"] = df["ood_rejected"].to_numpy(np.float64)
        nc = [f"noise_var_chosen_{k}" for k in range(len(cc))]
        nr = [f"noise_var_rejected_{k}" for k in range(len(cc))]
        if all(c in df.columns for c in nc + nr):
            kw["noise_var_chosen"] = df[nc].to_numpy(np.float64)
            kw["noise_var_rejected"] = df[nr].to_numpy(np.float64)
        if "weight" in df.columns:
            kw["weights"] = df["weight"].to_numpy(np.float64)
        if "anchored" in df.columns and len(df):
            kw["anchored"] = bool(df["anchored"].iloc[0])
        return cls(df[cc].to_numpy(np.float64), df[rc].to_numpy(np.float64), df["target"].to_numpy(np.float64), df["id"].tolist(), **kw)


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)


def _batches(dataset: Any, batch_size: int, collator: Any, order: np.ndarray):
    for start in range(0, len(order), batch_size):
        yield collator([dataset[int(i)] for i in order[start : start + batch_size]])


def _order(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Length-sorted order (less padding) and its inverse, to put results back in dataset order."""
    from auq.data import length_order

    order = length_order(dataset)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return order, inverse


def _resolve(model: Any, dataset: Any, batch_size: int, device: Any, collator: Any):
    from ._protocol import check_member_reward_module  # any nn.Module returning [B, K] rewards

    check_member_reward_module(model, collator)
    from auq.data.dataset import check_pairs

    check_pairs(dataset, "dataset")  # a path, a dict of columns, examples without 'rejected' ...
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"dataset must be a PreferenceDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty; nothing to score")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    device = check_device(device, "device") if device is not None else default_device()
    if collator is None:
        if hasattr(model, "make_collator"):
            collator = model.make_collator()
        else:
            from auq.data import PreferenceCollator

            tokenizer = getattr(model, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("model has no tokenizer; pass collator=")
            collator = PreferenceCollator(tokenizer)
    return batch_size, device, collator


@torch.no_grad()
def score(
    model: Any,
    dataset: Any,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = True,
    collator: Any = None,
    feature_cache: Any = None,
) -> Predictions:
    """Score every pair of ``dataset`` with ``model``: member rewards of both sides.

    Chosen and rejected texts of a batch go through the model in one forward (concatenated along
    the batch axis), in eval mode under ``torch.no_grad``; the model's training flag is restored
    afterwards. Heads ensembles and head-scope MC dropout run the trunk once per text.

    When the model carries a feature density (``model.density``, fitted at the end of training
    or by ``model.fit_uncertainty``), the same trunk pass gives ``ood_chosen``/``ood_rejected``:
    each response's density percentile (0.99 = farther from the training features than 99% of
    the training responses). When it carries training offsets (``model.reward_offsets``), the
    rewards are anchored (each member minus its mean reward on the training responses) and
    ``Predictions.anchored`` is True: a response's reward statistics then do not depend on the
    other pairs scored with it. Heteroscedastic models also give each response's learned noise
    variance (``noise_var_chosen``/``noise_var_rejected``), which :meth:`Predictions.decompose`
    integrates into the aleatoric term.

    Under ``accelerate launch`` (or ``torchrun``) with several processes, each process scores one
    contiguous block of the pairs on its own device (``device=None``: the process's device) and the
    blocks are gathered back in dataset order: every process returns the same full
    :class:`Predictions`, equal row for row to a single-process run (see ``auq.models._sharding``).

    Parameters
    ----------
    model : reward model
        Any auq reward model, or any module returning member rewards
        (``forward(input_ids, attention_mask) -> [B, n_members]``, see ``MemberRewardModule``).
    dataset : PreferenceDataset
        The pairs (``dataset[i]`` gives an example dict).
    batch_size : int, default 32
        Pairs per forward (2 x batch_size texts).
    device : str or torch.device, optional
        Default: :func:`default_device`. The model is moved there.
    progress : bool, default True
        Show a tqdm progress bar.
    collator : callable, optional
        Default: ``model.make_collator()`` (the model's tokenizer, at the length it was trained with).
    feature_cache : str, path or FeatureCache, optional
        For a model with a frozen trunk: read the trunk features of texts already in this store
        (e.g. the trainer's ``feature_cache_dir``) and store the others, then score the features
        (:func:`score_features`). Pairs seen in training cost no trunk pass.

    Returns
    -------
    Predictions

    Examples
    --------
    >>> preds = score(ensemble, dataset, batch_size=16)  # doctest: +SKIP
    >>> preds.to_pandas()[["prob", "epistemic", "ood"]].head()  # doctest: +SKIP
    """
    from ._sharding import process_state, score_sharded

    state = process_state()
    if state is not None:
        from auq.data.dataset import check_pairs

        check_pairs(dataset, "dataset")
        if len(dataset) == 0:
            raise ValueError("dataset is empty; nothing to score")
        return score_sharded(state, _score_local, model, dataset, device, progress, batch_size=batch_size,
                             collator=collator, feature_cache=feature_cache)
    return _score_local(model, dataset, batch_size=batch_size, device=device, progress=progress,
                        collator=collator, feature_cache=feature_cache)


def _score_local(
    model: Any, dataset: Any, *, batch_size: int, device: Any, progress: bool, collator: Any, feature_cache: Any,
) -> Predictions:
    """:func:`score` in this process alone."""
    batch_size, device, collator = _resolve(model, dataset, batch_size, device, collator)
    ids = list(getattr(dataset, "ids", range(len(dataset))))
    exact = getattr(dataset, "targets", None)  # float64 labels without the collator's float32 round trip
    if feature_cache is not None and _scores_from_features(model):
        from ._features import cached_pair_features

        fc, fr = cached_pair_features(feature_cache, model, dataset, collator=collator, batch_size=batch_size,
                                      device=device, progress=progress)
        if exact is None:
            exact = [_target(dataset[i]) for i in range(len(dataset))]
        model.to(device)
        return score_features(model, fc, fr, targets=exact, ids=ids, device=device)
    density = getattr(model, "density", None)
    cols = _pass(model, dataset, batch_size, device, collator, progress, features=density is not None, desc="scoring")
    labels = np.asarray(exact, dtype=np.float64) if exact is not None else cols["t"]
    return _predictions(model, cols, labels, ids)


def _scores_from_features(model: Any) -> bool:
    """True when ``model``'s rewards are a function of its frozen trunk's pooled features."""
    if not (getattr(model, "trunk_frozen", False) and callable(getattr(model, "forward_features", None))):
        return False
    return getattr(getattr(model, "config", None), "scope", None) != "full"  # MC dropout inside the trunk


def _target(example: Any) -> float:
    t = example.get("target") if hasattr(example, "get") else None
    return 1.0 if t is None else float(t)


@torch.no_grad()
def score_features(
    model: Any,
    features_chosen: Any,
    features_rejected: Any,
    *,
    targets: Any = None,
    ids: Any = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> Predictions:
    """:func:`score` from precomputed trunk features (``model.encode`` output of each response).

    For models whose rewards are a function of the pooled features (``forward_features``): heads
    ensembles, head-scope MC dropout, the Laplace last layer, wrapped classifiers. Encode once
    (:func:`encode_dataset` or a :class:`FeatureCache`), then score as many models as you like.

    Parameters
    ----------
    model : auq reward model with ``forward_features``
    features_chosen, features_rejected : array-like or tensor, shape [n_pairs, H] (or [n_pairs, K, H])
    targets : array-like, optional
        P(chosen preferred) per pair (default 1.0).
    ids : sequence, optional
        Pair identifiers (default ``0..n-1``).
    batch_size : int, default 1024
        Responses per ``forward_features`` call.
    device : str or torch.device, optional
        Default: the model's device.

    Returns
    -------
    Predictions

    Examples
    --------
    >>> fc, fr = encode_dataset(model, test)             # doctest: +SKIP
    >>> preds = score_features(model, fc, fr, targets=test.targets)  # doctest: +SKIP
    """
    from auq._checks import as_float_array

    if not callable(getattr(model, "forward_features", None)):
        raise TypeError(f"model: a {type(model).__name__} has no forward_features; use score() on texts")
    fc = as_float_array(features_chosen, "features_chosen", ndim=(2, 3))
    fr = as_float_array(features_rejected, "features_rejected", ndim=(2, 3))
    if fc.shape != fr.shape:
        raise ValueError(f"features_chosen and features_rejected must have the same shape, got {fc.shape} and {fr.shape}")
    n = fc.shape[0]
    if n == 0:
        raise ValueError("features_chosen is empty; nothing to score")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    labels = np.ones(n) if targets is None else as_float_array(targets, "targets", ndim=1)
    ids = list(range(n)) if ids is None else list(ids)
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    if was_training:  # (walking a large trunk's modules to set a mode it already has costs time)
        model.eval()
    outs: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    both = np.concatenate([fc, fr])
    try:
        for start in range(0, len(both), batch_size):
            chunk = torch.as_tensor(both[start : start + batch_size], dtype=torch.float32, device=device)
            outs.append(_rewards_from_features(model, chunk))
    finally:
        if was_training:
            model.train()
    rewards = torch.cat([r for r, _ in outs]).double().cpu().numpy()
    var = None if outs[0][1] is None else torch.cat([v for _, v in outs]).double().cpu().numpy()
    pooled = both.mean(1) if both.ndim == 3 else both
    cols = {
        "rc": rewards[:n], "rr": rewards[n:], "fc": pooled[:n], "fr": pooled[n:],
        "vc": None if var is None else var[:n], "vr": None if var is None else var[n:],
    }
    return _predictions(model, cols, labels, ids)


def _predictions(
    model: Any, cols: dict[str, Any], labels: np.ndarray, ids: list, weights: np.ndarray | None = None
) -> Predictions:
    """The one place raw pass outputs become :class:`Predictions` (ood, anchoring, noise);
    :func:`score`, :func:`score_features` and ``RewardModelTrainer.predict`` all end here."""
    rc, rr = cols["rc"], cols["rr"]
    kw: dict[str, Any] = {}
    density = getattr(model, "density", None)
    if density is not None and cols.get("fc") is not None:
        kw["ood_chosen"], kw["ood_rejected"] = density.percentile(cols["fc"]), density.percentile(cols["fr"])
    if cols.get("vc") is not None:
        kw["noise_var_chosen"], kw["noise_var_rejected"] = cols["vc"], cols["vr"]
    if getattr(model, "anchored", False):
        rc, rr = model.anchor(rc), model.anchor(rr)
        kw["anchored"] = True
    return Predictions(rc, rr, labels, ids, weights=weights, **kw)


def _rewards_from_features(model: Any, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Member rewards (and the learned noise variance of heteroscedastic models) from features."""
    if getattr(model, "heteroscedastic", False):
        return model.forward_features_with_variance(feats)
    return model.forward_features(feats), None


def _features_and_rewards(
    model: Any, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pooled features ``[B, H]`` (per-member features averaged), member rewards ``[B, K]`` and
    the learned noise variance (or None).

    One trunk pass (``encode`` then ``forward_features``) where the model allows it; models whose
    rewards cannot come from the pooled features (MC dropout ``scope="full"``) run ``forward`` too.
    """
    feats = model.encode(ids, mask)
    try:
        rewards, var = _rewards_from_features(model, feats)
    except NotImplementedError:
        rewards, var = _rewards_from_ids(model, ids, mask)
    if feats.dim() == 3:
        feats = feats.mean(1)
    return feats, rewards, var


def _rewards_from_ids(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    if getattr(model, "heteroscedastic", False):
        return model.forward_with_variance(ids, mask)
    return model(ids, mask), None


@torch.no_grad()
def _pass(
    model: Any, dataset: Any, batch_size: int, device: torch.device, collator: Any, progress: bool,
    *, features: bool, desc: str,
) -> dict[str, np.ndarray | None]:
    """One pass over ``dataset`` in eval mode, results in dataset order (float64): raw member
    rewards ``rc``/``rr``, pooled features ``fc``/``fr`` when ``features`` (else None), learned
    noise variances ``vc``/``vr`` (heteroscedastic models, else None) and collated targets ``t``."""
    was_training = model.training
    model.to(device)
    model.eval()
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("rc", "rr", "fc", "fr", "vc", "vr", "t")}
    n_batches = (len(dataset) + batch_size - 1) // batch_size
    order, inverse = _order(dataset)

    def keep(name: str, x: torch.Tensor, b: int) -> None:
        x = x.detach().cpu().to(torch.float64)  # float64 rewards (Laplace) keep their precision
        cols[name + "c"].append(x[:b])
        cols[name + "r"].append(x[b:])

    try:
        for batch in _progress(_batches(dataset, batch_size, collator, order), n_batches, progress, desc):
            b = batch["input_ids_chosen"].shape[0]
            ids = torch.cat([batch["input_ids_chosen"], batch["input_ids_rejected"]]).to(device)
            mask = torch.cat([batch["attention_mask_chosen"], batch["attention_mask_rejected"]]).to(device)
            if features:
                feats, rewards, var = _features_and_rewards(model, ids, mask)
                keep("f", feats, b)
            else:
                rewards, var = _rewards_from_ids(model, ids, mask)
            keep("r", rewards, b)
            if var is not None:
                keep("v", var, b)
            cols["t"].append(batch["targets"].to(torch.float64))
    finally:
        model.train(was_training)
    return {k: torch.cat(v).numpy()[inverse] if v else None for k, v in cols.items()}


@torch.no_grad()
def encode_dataset(
    model: Any, dataset: Any, batch_size: int = 32, device: str | torch.device | None = None,
    progress: bool = True, collator: Any = None, per_member: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of the chosen and the rejected responses: two float64 ``[n_pairs, H]`` arrays.

    Models whose ``encode`` returns per-member features ``[B, K, H]`` are averaged over members,
    unless ``per_member`` (then ``[n_pairs, K, H]``, what ``forward_features`` takes).
    """
    batch_size, device, collator = _resolve(model, dataset, batch_size, device, collator)
    was_training = model.training
    model.to(device)
    model.eval()
    fc, fr = [], []
    n_batches = (len(dataset) + batch_size - 1) // batch_size
    order, inverse = _order(dataset)
    try:
        for batch in _progress(_batches(dataset, batch_size, collator, order), n_batches, progress, "encoding"):
            b = batch["input_ids_chosen"].shape[0]
            ids = torch.cat([batch["input_ids_chosen"], batch["input_ids_rejected"]]).to(device)
            mask = torch.cat([batch["attention_mask_chosen"], batch["attention_mask_rejected"]]).to(device)
            feats = model.encode(ids, mask)
            if feats.dim() == 3 and not per_member:
                feats = feats.mean(1)
            feats = feats.float().cpu().to(torch.float64)
            fc.append(feats[:b])
            fr.append(feats[b:])
    finally:
        model.train(was_training)
    return torch.cat(fc).numpy()[inverse], torch.cat(fr).numpy()[inverse]

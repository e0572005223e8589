"""Prediction and evaluation of :class:`RewardModelTrainer` (metrics on its cached or live forward pass)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..models._scoring import Predictions, _predictions
from ._batching import (
    _CollateWithExtras,
    _IndexedDataset,
    _stack_collate,
)

logger = logging.getLogger("auq.training.reward_trainer")


def _column(dataset: Any, name: str, n: int, collated: torch.Tensor) -> np.ndarray:
    """The dataset's own float64 column ``name`` (as :func:`auq.models.score` reads it: no float32
    round trip through the collator) when it has one of length ``n``; else the collated values."""
    values = getattr(dataset, name, None)
    if values is not None and len(values) == n:
        return np.asarray(values, dtype=np.float64)
    return collated.numpy()


class _EvaluationMixin:
    """Methods of :class:`~auq.training.RewardModelTrainer` (not used on its own)."""

    @torch.no_grad()
    def predict(self, dataset: Any = None) -> Predictions:
        """Score a dataset (default: the eval set) across all processes: :class:`~auq.models.Predictions`.

        The same object :func:`auq.models.score` returns, built by the same code (anchoring by the
        model's training offsets, learned noise variances of heteroscedastic models), in dataset
        order, plus the pairs' ``weights``. Under ``accelerate launch`` each process scores its
        share of the pairs and every process gets all of them (the even-sharding duplicates
        dropped). With a frozen trunk the features come from :attr:`feature_store` (no trunk pass
        for texts it holds). Out-of-distribution scores are not computed here (use ``score``).

        Returns
        -------
        Predictions
            ``rewards_chosen``/``rewards_rejected`` float64 ``[n_pairs, n_members]``; ``targets`` and
            ``weights`` float64 ``[n_pairs]`` (the dataset's own float64 columns where it has them);
            ``ids`` the dataset's ``ids`` (else ``0..n-1``).

        Examples
        --------
        >>> preds = trainer.predict(test)                     # doctest: +SKIP
        >>> preds.decompose().epistemic.mean()                # doctest: +SKIP
        """
        self._prepare()
        if dataset is None:
            if self.eval_loader is None:
                raise ValueError("dataset: no dataset given and the trainer has no eval_dataset")
            loader, dataset = self.eval_loader, self.eval_dataset
        else:
            self._check_dataset(dataset, "dataset")
            margin_column = self.config.margin if isinstance(self.config.margin, str) else None
            indexed = _IndexedDataset(dataset, margin_column)
            if self.use_features:
                ds, collate = self._feature_dataset(indexed), _stack_collate
            else:
                ds, collate = indexed, _CollateWithExtras(self.collator)
            loader = self.accelerator.prepare(
                self._make_loader(ds, self.config.per_device_eval_batch_size, False, collate)
            )
        module = self.forward_module
        was_training = module.training
        module.eval()
        parts: list[tuple[torch.Tensor, ...]] = []
        for batch in loader:
            with self.accelerator.autocast():
                rc, rr = self._rewards(batch)
            zeros = torch.zeros_like(rc)
            vc = batch.get("noise_var_chosen", zeros)  # heteroscedastic models' learned variances
            vr = batch.get("noise_var_rejected", zeros)
            gathered = self.accelerator.gather_for_metrics(
                (rc, rr, batch["targets"].float(), batch["weights"].float(), batch["index"], vc.float(), vr.float())
            )
            parts.append(tuple(t.cpu() for t in gathered))
        module.train(was_training)
        rc, rr, t, w, idx, vc, vr = (torch.cat([p[i] for p in parts]).double() for i in range(7))
        order = torch.argsort(idx)
        hetero = getattr(self.model, "heteroscedastic", False)
        cols = {
            "rc": rc[order].numpy(), "rr": rr[order].numpy(),
            "vc": vc[order].numpy() if hetero else None, "vr": vr[order].numpy() if hetero else None,
        }
        n = len(order)
        ids = getattr(dataset, "ids", None)
        return _predictions(
            self.model,
            cols,
            _column(dataset, "targets", n, t[order]),
            list(ids) if ids is not None and len(ids) == n else list(range(n)),
            weights=_column(dataset, "weights", n, w[order]),
        )

    def evaluate(self, eval_dataset: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate on held-out pairs.

        Returns a dict (keys prefixed with ``metric_key_prefix + "_"``): ``loss`` (Bradley-Terry,
        no bootstrap weights), ``accuracy`` (preference accuracy of the ensemble probability),
        ``nll``, ``ece`` (order-free pairwise ECE), ``epistemic`` (mean mutual information),
        ``margin_std`` (mean std over members of the margin); plus ``epoch`` and ``step``.
        The entry is also appended to ``log_history``.
        """
        from ..calibration import (
            negative_log_likelihood,
            pairwise_calibration_error,
            preference_accuracy,
        )

        preds = self.predict(eval_dataset)
        targets = preds.targets
        batch = {"targets": torch.tensor(targets), "weights": torch.tensor(preds.weights)}
        if isinstance(self.config.margin, str):
            batch["margin"] = self._eval_margins(eval_dataset)
        if preds.noise_var_chosen is not None:  # heteroscedastic: the objective trained on, as score() sees it
            batch["noise_var"] = torch.tensor(preds.noise_var_chosen + preds.noise_var_rejected)
        tc, tr = torch.tensor(preds.rewards_chosen), torch.tensor(preds.rewards_rejected)
        loss = float(self._loss(tc, tr, batch, bootstrap=False))
        dec = preds.decompose()
        prob = np.asarray(dec.prob, dtype=np.float64)
        p = metric_key_prefix + "_"
        metrics = {
            p + "loss": loss,
            p + "accuracy": float(preference_accuracy(prob, targets)),
            p + "nll": float(negative_log_likelihood(prob, targets)),
            p + "ece": float(pairwise_calibration_error(prob, targets, n_bins=self.config.ece_bins)),
            p + "epistemic": float(np.mean(dec.epistemic)),
            p + "margin_std": float(np.mean(dec.margin_std)),
            "epoch": float(getattr(self, "_epoch_float", 0.0)),
            "step": int(self.global_step),
        }
        self._log(metrics)
        return metrics

    def _eval_margins(self, dataset: Any) -> torch.Tensor:
        indexed = (
            self._eval_indexed
            if dataset is None
            else _IndexedDataset(dataset, self.config.margin)  # type: ignore[arg-type]
        )
        return torch.tensor([indexed[i]["__margin__"] for i in range(len(indexed))], dtype=torch.float64)

    # ----------------------------------------------------------------------------- saving

"""Prediction and evaluation of :class:`RewardModelTrainer` (metrics on its cached or live forward pass)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ._batching import (
    _CollateWithExtras,
    _IndexedDataset,
    _stack_collate,
)

logger = logging.getLogger("auq.training.reward_trainer")


class _EvaluationMixin:
    """Methods of :class:`~auq.training.RewardModelTrainer` (not used on its own)."""

    @torch.no_grad()
    def predict(self, dataset: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Member rewards of a dataset (default: the eval set), gathered from all processes.

        With a frozen trunk the features come from :attr:`feature_store` (no trunk pass for texts
        it holds).

        Returns
        -------
        rewards_chosen, rewards_rejected : numpy.ndarray
            float64 ``[n_pairs, n_members]``, in dataset order.
        targets, weights : numpy.ndarray
            float64 ``[n_pairs]``.
        """
        self._prepare()
        if dataset is None:
            if self.eval_loader is None:
                raise ValueError("dataset: no dataset given and the trainer has no eval_dataset")
            loader = self.eval_loader
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
            noise = batch.get("noise_var", torch.zeros_like(rc))  # heteroscedastic models' v_c + v_r
            gathered = self.accelerator.gather_for_metrics(
                (rc, rr, batch["targets"].float(), batch["weights"].float(), batch["index"], noise.float())
            )
            parts.append(tuple(t.cpu() for t in gathered))
        module.train(was_training)
        rc, rr, t, w, idx, nv = (torch.cat([p[i] for p in parts]) for i in range(6))
        order = torch.argsort(idx)
        #: the pairs' learned noise variance (v_c + v_r) of the last predict(), for evaluate()
        self._last_noise_var = nv[order].double().numpy() if getattr(self.model, "heteroscedastic", False) else None
        return tuple(x[order].double().numpy() for x in (rc, rr, t, w))  # type: ignore[return-value]

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
        from ..estimators import decompose

        rc, rr, targets, weights = self.predict(eval_dataset)
        tc, tr = torch.from_numpy(rc), torch.from_numpy(rr)
        batch = {
            "targets": torch.from_numpy(targets),
            "weights": torch.from_numpy(weights),
        }
        if isinstance(self.config.margin, str):
            batch["margin"] = self._eval_margins(eval_dataset)
        noise = self._last_noise_var  # heteroscedastic: the objective trained on, as score() sees it
        if noise is not None:
            batch["noise_var"] = torch.from_numpy(noise)
        loss = float(self._loss(tc, tr, batch, bootstrap=False))
        dec = decompose(rc - rr, noise_var=noise)
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

"""Cached trunk features, closed-form fits, anchoring, early stopping and the uncertainty state fitted after training, for :class:`RewardModelTrainer`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from ._batching import _FeatureDataset, _IndexedDataset, _pair_columns
from ._spread import (
    anchor_penalty,
    head_parameters,
)
from ._trainer_config import TrainResult

logger = logging.getLogger("auq.training.reward_trainer")


class _FitMixin:
    """Methods of :class:`~auq.training.RewardModelTrainer` (not used on its own)."""

    def _features(self, which: str) -> _FeatureDataset:
        if which in self._feature_cache:
            return self._feature_cache[which]
        indexed = self._train_indexed if which == "train" else self._eval_indexed
        ds = self._feature_dataset(indexed)
        self._feature_cache[which] = ds
        return ds

    def _feature_dataset(self, indexed: _IndexedDataset) -> _FeatureDataset:
        """Trunk features of ``indexed`` from :attr:`feature_store` plus its per-pair columns."""
        cfg, acc = self.config, self.accelerator
        # in float32 even under bf16 training: one pass over a frozen trunk, and the features then
        # serve score() (float32) and the density as they are
        with acc.main_process_first():
            fc, fr = self.feature_store.features(
                self.model,
                indexed.dataset,
                collator=self.collator,
                batch_size=cfg.per_device_eval_batch_size,
                device=acc.device,
                progress=not cfg.disable_tqdm and acc.is_local_main_process,
            )
        tensors = {"features_chosen": torch.from_numpy(fc), "features_rejected": torch.from_numpy(fr)}
        tensors.update(_pair_columns(indexed))
        return _FeatureDataset(tensors)

    def feature_cache_key(self, dataset: Any = None) -> str:
        """Folder name of this model's trunk in ``feature_cache_dir`` (see :class:`auq.models.FeatureCache`).

        It depends on the trunk's weights, the tokenizer, ``max_length`` and the pooling (features
        are computed in float32), not on the data, the heads, their number or seeds: every model on the same
        frozen trunk shares the stored features (``dataset`` is accepted for compatibility).
        """
        return self.feature_store.key(self.model, self.collator)

    # ----------------------------------------------------------------------------- loss

    def _train_closed_form(self) -> TrainResult:
        """Fit a closed-form model on the cached training features (targets and weights honoured;
        bootstrap, epochs, learning rate and checkpoints to resume from do not apply)."""
        cfg = self.config
        if cfg.margin is not None:
            raise ValueError("margin: a closed-form model (e.g. LaplaceRewardModel) is fitted without a margin")
        ignored = [name for name, on in (
            ("early_stopping_patience", cfg.early_stopping_patience is not None),
            ("load_best_model_at_end", cfg.load_best_model_at_end),
            ("prior_precision", bool(cfg.prior_precision)),
            ("bootstrap", cfg.bootstrap),
        ) if on]  # fmt: skip
        if ignored:
            logger.warning("%s: not used by a closed-form model (its prior is the model's own prior_precision)",
                           ", ".join(ignored))
        self._prepare()
        t = self._features("train").tensors
        post = self.accelerator.unwrap_model(self.model).fit_features(
            t["features_chosen"], t["features_rejected"], targets=t["targets"], weights=t["weights"]
        )
        self._epoch_float = 1.0
        self._log({
            "loss": float(post.nll), "prior_precision": float(post.prior_precision),
            "log_evidence": float(post.log_evidence), "newton_iterations": int(post.n_iter),
            "epoch": 1.0, "step": 0,
        })  # fmt: skip
        metrics = self.evaluate() if self.eval_loader is not None else {}
        if self.config.fit_uncertainty:
            self._fit_uncertainty()
        self.accelerator.wait_for_everyone()
        return TrainResult(
            global_step=0, training_loss=float(post.nll), metrics=dict(metrics),
            log_history=tuple(dict(e) for e in self.log_history),
        )

    def anchor_penalty(self) -> torch.Tensor:
        """The anchored-ensembling prior term added to the training loss (0 when off).

        ``prior_precision/(2N) · mean_k ||θ_k − θ_k⁰||²`` over the reward-head parameters, ``N``
        the number of training pairs (see :func:`auq.training._spread.anchor_penalty`).
        """
        if not self._anchors:
            return torch.zeros(())
        params = head_parameters(self.accelerator.unwrap_model(self.model))
        return anchor_penalty(
            params, self._anchors, self.prior_precision, len(self.train_dataset), self._anchor_members
        )

    def _early_stopping_update(self, metrics: Mapping[str, float]) -> bool:
        """Track the best evaluation (and its parameters); True when patience has run out."""
        cfg = self.config
        if cfg.early_stopping_patience is None and not cfg.load_best_model_at_end:
            return False
        key = cfg.metric_for_best_model
        if key not in metrics:
            raise ValueError(f"metric_for_best_model: {key!r} is not among the metrics {sorted(metrics)}")
        if self._early.update(metrics[key], self.global_step) and cfg.load_best_model_at_end:
            model = self.accelerator.unwrap_model(self.model)
            self._best_params = {
                n: p.detach().to("cpu").clone() for n, p in model.named_parameters() if p.requires_grad
            }
        patience = cfg.early_stopping_patience
        return patience is not None and self._early.bad_evals >= patience

    @torch.no_grad()
    def _restore_best(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        for n, p in model.named_parameters():
            if n in self._best_params:
                p.copy_(self._best_params[n].to(p.device))

    def _drop_stale_uncertainty(self) -> None:
        """Training changes the rewards (and a trained trunk its features): a density and reward
        offsets fitted before would be applied silently to the new model, so they go now (and are
        fitted afresh at the end when ``fit_uncertainty``)."""
        model = self.accelerator.unwrap_model(self.model)
        if getattr(model, "density", None) is None and getattr(model, "reward_offsets", None) is None:
            return
        logger.info(
            "the model's feature density and reward offsets describe it before this training: %s",
            "refitted at the end" if self.config.fit_uncertainty else "dropped (fit_uncertainty=False)",
        )
        model.density, model.reward_offsets = None, None

    @torch.no_grad()
    def _fit_uncertainty(self) -> None:
        """Fit ``model.density`` and ``model.reward_offsets`` on the training pairs (after training).

        Frozen trunk: from the cached features (``forward_features`` on them, no trunk pass).
        Otherwise one pass of ``model.fit_uncertainty``. Too few training responses for a density:
        a warning, ``density`` stays None, the offsets are fitted.
        """
        model = self.model
        if not callable(getattr(model, "fit_uncertainty_from_features", None)):
            return
        dev = self.accelerator.device
        if self.use_features:
            ds = self._features("train")
            fc, fr = ds.tensors["features_chosen"], ds.tensors["features_rejected"]
            was_training = model.training
            model.eval()
            bs = self.config.per_device_eval_batch_size
            def rewards(f: torch.Tensor) -> torch.Tensor:
                return torch.cat([model.forward_features(f[i : i + bs].to(dev)).float().cpu() for i in range(0, len(f), bs)])

            try:
                rc, rr = rewards(fc), rewards(fr)
            finally:
                model.train(was_training)
            model.fit_uncertainty_from_features(fc, fr, rc, rr, strict=False)
        else:
            model.fit_uncertainty(
                self._train_indexed.dataset, batch_size=self.config.per_device_eval_batch_size, device=dev,
                progress=not self.config.disable_tqdm and self.accelerator.is_local_main_process,
                collator=self.collator, strict=False,
            )
        logger.info("fitted feature density (%s) and training reward offsets",
                    "none: too few responses" if model.density is None else f"{model.density.n_features} dims")

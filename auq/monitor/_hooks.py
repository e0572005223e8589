"""Where the monitor plugs in: TRL's GRPO/RLOO trainers (a ``TrainerCallback``) and auq's
:class:`~auq.training.online.OnlineTrainer` (its ``train(callback=...)``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from ._core import MonitorStep, RewardHackingMonitor

logger = logging.getLogger(__name__)

__all__ = ["RewardHackingCallback", "online_monitor_callback", "response_features"]


def _check_monitor(monitor: Any) -> RewardHackingMonitor:
    if not isinstance(monitor, RewardHackingMonitor):
        raise TypeError(f"monitor must be a RewardHackingMonitor, got {type(monitor).__name__}")
    return monitor


def _gold(gold_fn: Any, prompts: Sequence[Any], completions: Sequence[Any]) -> Any:
    return None if gold_fn is None else np.asarray(gold_fn(prompts, completions), dtype=np.float64)


class RewardHackingCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` running a :class:`RewardHackingMonitor` inside TRL's
    ``GRPOTrainer`` or ``RLOOTrainer`` (trl 1.16).

    It does not score anything itself: it listens to the auq reward function the trainer already
    calls (:func:`auq.integrations.trl.uncertainty_penalized_reward_func`), which hands it the raw
    member rewards of every generation batch (and, when the monitor has a density, the pooled
    features from the same trunk pass). Per generation batch the monitor's metrics go through
    TRL's ``log_metric`` hook as ``monitor/<name>`` (averaged over each logging step, in
    ``trainer.state.log_history`` like TRL's own ``kl`` or ``reward``). At the end of an
    optimiser step, with ``monitor.stop_on_alarm`` and the alarm fired, it sets
    ``control.should_training_stop`` and the trainer stops after that step. Generation batches
    are what the monitor counts as steps (one per optimiser step unless TRL's
    ``steps_per_generation`` > 1).

    With several processes, each monitors the completions it scored; the stop is not
    synchronised across processes (tested on one process).

    Parameters
    ----------
    monitor : RewardHackingMonitor
    reward_func : UncertaintyPenalizedReward
        The auq reward function among the trainer's ``reward_funcs``.
    gold_fn : callable, optional
        ``gold_fn(prompts, completions) -> [n]`` gold rewards (for the proxy-gold gap).

    Examples
    --------
    >>> fn = uncertainty_penalized_reward_func(ensemble, method="lcb")  # doctest: +SKIP
    >>> monitor = RewardHackingMonitor.from_model(ensemble, train_pairs, stop_on_alarm=True)  # doctest: +SKIP
    >>> trainer = GRPOTrainer(model=policy, reward_funcs=[fn], args=cfg, train_dataset=ds,
    ...                       callbacks=[RewardHackingCallback(monitor, fn)])  # doctest: +SKIP
    """

    def __init__(self, monitor: RewardHackingMonitor, reward_func: Any, gold_fn: Callable | None = None) -> None:
        self.monitor = _check_monitor(monitor)
        if not isinstance(getattr(reward_func, "observers", None), list):
            raise TypeError(
                "reward_func must be auq's TRL reward function (auq.integrations.trl."
                f"uncertainty_penalized_reward_func), got {type(reward_func).__name__}"
            )
        if gold_fn is not None and not callable(gold_fn):
            raise TypeError(f"gold_fn must be callable, got {type(gold_fn).__name__}")
        self.reward_func = reward_func
        self.gold_fn = gold_fn
        self.last: MonitorStep | None = None
        if monitor.ood is not None:
            if getattr(reward_func.ensemble, "encode", None) is None:
                raise ValueError("the monitor has an OOD threshold but the reward model has no encode() for features")
            reward_func.collect_features = True
        reward_func.observers.append(self._observe)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        self._policy = model
        return control

    def _observe(self, fn: Any, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict) -> None:
        policy = getattr(self, "_policy", None)
        if policy is not None and not policy.training:  # TRL also scores its evaluation generations
            return
        feats = fn.last_features if self.monitor.ood is not None else None
        step = self.monitor.update(fn.last_member_rewards, features=feats, gold=_gold(self.gold_fn, prompts, completions))
        self.last = step
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, value in step.metrics().items():
                log_metric(name, value)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.monitor.should_stop and not control.should_training_stop:
            logger.warning("reward-hacking monitor: stopping training at global step %d", state.global_step)
            control.should_training_stop = True
        return control


@torch.no_grad()
def response_features(model: Any, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int = 32) -> np.ndarray:
    """Pooled features ``[n, H]`` (float64) of ``prompt + completion`` texts, as ``model`` sees them.

    The texts are built by the model's collator (as in training and in
    :func:`auq.training.best_of_n.ensemble_reward_fn`); per-member features are averaged, as
    :func:`auq.models.encode_dataset` does. For the feature-density signal of the monitor.
    """
    if not callable(getattr(model, "encode", None)) or not callable(getattr(model, "make_collator", None)):
        raise TypeError(f"model must be an auq reward model with encode() and make_collator(), got {type(model).__name__}")
    from auq.models._completions import score_completions

    device = next(model.parameters()).device
    _, feats = score_completions(
        model, model.make_collator(), prompts, completions, batch_size=batch_size, device=device,
        rewards=False, features=True,
    )
    return feats


def online_monitor_callback(
    monitor: RewardHackingMonitor,
    *,
    features_fn: Callable | None = None,
    gold_fn: Callable | None = None,
    then: Callable | None = None,
) -> Callable[[Any, dict], None]:
    """A ``callback(trainer, step_output)`` for :meth:`auq.training.online.OnlineTrainer.train`.

    Reuses the step's member rewards (``step_output["member_rewards"]``; anchored when the
    trainer's ``reward_fn.anchored``), so nothing is scored twice. The step's
    :class:`MonitorStep` is put in ``step_output["monitor"]`` and its metrics into the trainer's
    last history record (``trainer.records[-1]``, prefixed ``monitor/``). With
    ``monitor.stop_on_alarm`` and the alarm fired, it calls ``trainer.request_stop()``: training
    ends after this step.

    Parameters
    ----------
    monitor : RewardHackingMonitor
    features_fn : callable, optional
        ``features_fn(prompts, completions) -> [n, H]`` features for the monitor's density
        (e.g. ``lambda p, c: response_features(model, p, c)``). Required when the monitor has an
        OOD threshold.
    gold_fn : callable, optional
        ``gold_fn(prompts, completions) -> [n]`` gold rewards.
    then : callable, optional
        Another ``callback(trainer, step_output)`` called afterwards (e.g. an evaluation).

    Examples
    --------
    >>> cb = online_monitor_callback(monitor, features_fn=lambda p, c: response_features(rm, p, c))  # doctest: +SKIP
    >>> trainer.train(callback=cb)  # doctest: +SKIP
    """
    _check_monitor(monitor)
    for name, f in (("features_fn", features_fn), ("gold_fn", gold_fn), ("then", then)):
        if f is not None and not callable(f):
            raise TypeError(f"{name} must be callable, got {type(f).__name__}")
    if monitor.ood is not None and features_fn is None:
        raise ValueError("the monitor has an OOD threshold: pass features_fn(prompts, completions) -> [n, H]")

    def callback(trainer: Any, out: dict) -> None:
        ro = out["rollout"]
        feats = None if features_fn is None else features_fn(ro.prompts, ro.completions)
        anchored = bool(getattr(trainer.reward_fn, "anchored", False))
        step = monitor.update(out["member_rewards"], anchored=anchored, features=feats,
                              gold=_gold(gold_fn, ro.prompts, ro.completions))
        out["monitor"] = step
        if getattr(trainer, "records", None):
            trainer.records[-1].update(step.metrics())
        if monitor.should_stop:
            trainer.request_stop(f"reward-hacking alarm at monitor step {monitor.alarm_step}")
        if then is not None:
            then(trainer, out)

    return callback

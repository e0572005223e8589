"""Experiment trackers (``report_to``) for every auq trainer, through Accelerate's own trackers.

``report_to="tensorboard"`` / ``"wandb"`` / ``"all"`` becomes ``Accelerator(log_with=...,
project_dir=logging_dir)``; :meth:`Trackers.start` calls ``accelerator.init_trackers`` with the
config, :meth:`Trackers.log` ``accelerator.log`` with each logged entry at its step, and
:meth:`Trackers.end` ``accelerator.end_training``. With ``"none"`` (the default) all of them do
nothing.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["Trackers", "tracker_kwargs"]


def tracker_kwargs(config: Any) -> dict[str, Any]:
    """``Accelerator`` keyword arguments for ``config.report_to`` (empty for ``"none"``)."""
    log_with = config.log_with()
    if log_with is None:
        return {}
    return {"log_with": log_with, "project_dir": config.tracker_dir()}


def _hparams(d: Mapping[str, Any]) -> dict[str, Any]:
    """The config as tracker hyper-parameters: scalars and strings (None, lists, dicts as text)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif v is not None:
            out[k] = json.dumps(v, default=str)
    return out


class Trackers:
    """The trackers of one trainer: ``start`` / ``log`` / ``end``, no-ops without ``report_to``.

    Parameters
    ----------
    config : TrainingArgumentsBase
    accelerator : accelerate.Accelerator or None
        The trainer's own (built with :func:`tracker_kwargs`); ``None`` builds one for logging only
        when ``report_to`` asks for a tracker.
    project : str
        Run name under ``logging_dir``.

    Examples
    --------
    >>> from auq.training import OnlineConfig
    >>> t = Trackers(OnlineConfig(report_to="none"), None, "online")
    >>> t.enabled, t.start(), t.log({"loss": 1.0}, step=1), t.end()
    (False, None, None, None)
    """

    def __init__(self, config: Any, accelerator: Any, project: str) -> None:
        kwargs = tracker_kwargs(config)
        self.enabled = bool(kwargs)
        self.config = config
        self.project = project
        self.accelerator = accelerator
        self._started = False
        if self.enabled and accelerator is None:
            from accelerate import Accelerator

            self.accelerator = Accelerator(**kwargs)

    def start(self) -> None:
        """Initialise the trackers with the config as hyper-parameters (once per training run)."""
        if self.enabled and not self._started:
            self.accelerator.init_trackers(self.project, config=_hparams(self.config.to_dict()))
            self._started = True

    def log(self, entry: Mapping[str, Any], step: int) -> None:
        """Log the numeric values of ``entry`` at ``step``."""
        if not self._started:
            return
        values = {k: float(v) for k, v in entry.items()
                  if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "step"}
        self.accelerator.log(values, step=int(step))

    def end(self) -> None:
        """Flush and close the trackers."""
        if self._started:
            self.accelerator.end_training()
            self._started = False

"""The reward-hacking monitor: per-step signals of the policy leaving the reward model's competence.

Thresholds come from the reward model's own training responses; see
:class:`RewardHackingMonitor` for what is tracked and why each threshold is set the way it is.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from auq._checks import as_float_array, check_choice, check_float, check_int

logger = logging.getLogger(__name__)

__all__ = ["RewardHackingWarning", "RateAlarm", "MonitorStep", "RewardHackingMonitor"]

SIGNALS = ("ood", "disagreement")


class RewardHackingWarning(UserWarning):
    """Issued (once per monitor) when the reward-hacking alarm fires."""


@dataclass(frozen=True)
class RateAlarm:
    """Alarm on the fraction of responses beyond a per-response cutoff.

    A batch of ``n`` responses with ``x`` of them beyond ``cutoff`` raises the alarm when both

    * ``x / n >= factor * nominal`` (the effect is large: ``factor`` times the rate of the
      training responses), and
    * ``P(X >= x) <= alpha`` for ``X ~ Binomial(n, nominal)`` (the excess is not chance: on
      training-like responses the alarm fires in at most an ``alpha`` fraction of batches).

    Attributes
    ----------
    name : str
    cutoff : float
        Per-response threshold (a feature-density percentile, or an anchored member std).
    nominal : float in (0, 1)
        Fraction of the training responses beyond ``cutoff``.
    factor : float >= 1
    alpha : float in (0, 1)

    Examples
    --------
    >>> a = RateAlarm("ood", cutoff=0.99, nominal=0.01, factor=3.0, alpha=0.01)
    >>> a.critical_count(32)  # P(X >= 3) = 0.0036 <= 0.01 < P(X >= 2) = 0.040
    3
    >>> a.test(2, 32)[0], a.test(3, 32)[0]
    (False, True)
    """

    name: str
    cutoff: float
    nominal: float
    factor: float = 3.0
    alpha: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "cutoff", check_float(self.cutoff, "cutoff"))
        object.__setattr__(self, "nominal", check_float(self.nominal, "nominal", minimum=0.0, maximum=1.0,
                                                        inclusive=(False, False)))
        object.__setattr__(self, "factor", check_float(self.factor, "factor", minimum=1.0))
        object.__setattr__(self, "alpha", check_float(self.alpha, "alpha", minimum=0.0, maximum=1.0,
                                                      inclusive=(False, False)))

    def p_value(self, count: int, n: int) -> float:
        """``P(X >= count)`` for ``X ~ Binomial(n, nominal)`` (1.0 for ``count <= 0``)."""
        from scipy.stats import binom

        return 1.0 if count <= 0 else float(binom.sf(count - 1, n, self.nominal))

    def test(self, count: int, n: int) -> tuple[bool, float]:
        """``(alarm, p_value)`` for ``count`` of ``n`` responses beyond the cutoff."""
        count = check_int(count, "count", minimum=0)
        n = check_int(n, "n", minimum=1)
        if count > n:
            raise ValueError(f"count ({count}) must be <= n ({n})")
        p = self.p_value(count, n)
        return bool(count >= self.factor * self.nominal * n - 1e-9 and p <= self.alpha), p

    def critical_count(self, n: int) -> int | None:
        """The smallest count of ``n`` that raises the alarm (None: no count can)."""
        n = check_int(n, "n", minimum=1)
        start = max(1, math.ceil(self.factor * self.nominal * n - 1e-9))
        for x in range(start, n + 1):
            if self.p_value(x, n) <= self.alpha:
                return x
        return None


@dataclass(frozen=True)
class MonitorStep:
    """The monitor's record of one batch of generated responses.

    Attributes
    ----------
    step : int
        0-based count of :meth:`RewardHackingMonitor.update` calls.
    n : int
        Responses in the batch.
    disagreement : float
        Mean over responses of the anchored member std (members minus their training offsets).
    disagreement_rate, disagreement_p : float
        Fraction of responses whose anchored std exceeds the training cutoff; binomial p-value.
    ood_rate, ood_p, ood_mean : float
        Fraction of responses beyond the density's training percentile cutoff, its p-value, the
        mean percentile (NaN without a density).
    proxy_drift : float
        Mean anchored ensemble-mean reward (0 on the training responses by construction).
    proxy_drift_z : float
        ``proxy_drift`` in units of the std of the training responses' anchored mean rewards.
    gold_mean, proxy_gain, gold_gain, gap : float
        With a gold reward: its mean; proxy and gold gains since the first step with gold;
        ``gap = proxy_gain - gold_gain`` (NaN otherwise).
    signals : tuple of str
        Signals over their threshold in this batch.
    alarm : bool
        True once the alarm has fired (latched).
    """

    step: int
    n: int
    disagreement: float
    disagreement_rate: float
    disagreement_p: float
    ood_rate: float
    ood_p: float
    ood_mean: float
    proxy_drift: float
    proxy_drift_z: float
    gold_mean: float
    proxy_gain: float
    gold_gain: float
    gap: float
    signals: tuple[str, ...]
    alarm: bool

    def metrics(self, prefix: str = "monitor/") -> dict[str, float]:
        """Scalar metrics for a logger (NaN entries left out; ``alarm`` as 0/1)."""
        out = {}
        for k, v in asdict(self).items():
            if k in ("step", "signals"):
                continue
            v = float(v)
            if not math.isnan(v):
                out[prefix + k] = v
        return out


class RewardHackingMonitor:
    """Tracks, per batch of generated responses, whether RL leaves the reward model's competence.

    Per step, on the policy's responses:

    * **member disagreement**: each response's std over members of the *anchored* rewards
      (member ``k`` minus its mean reward on the training responses, ``model.reward_offsets``),
      so a response's spread does not depend on the other responses of the batch;
    * **feature-density OOD rate**: the fraction of responses whose density percentile
      (:class:`auq.models.FeatureDensity`, 0.99 = farther than 99% of the training responses)
      exceeds ``ood_percentile``;
    * **proxy drift**: the mean anchored ensemble reward (0 on the training responses), also in
      units of the training responses' spread (``proxy_drift_z``);
    * **proxy-gold gap** when a gold reward is given: proxy gain minus gold gain since the first
      monitored step (in reward units when both share a scale; otherwise read its trend).

    Thresholds, from the reward model's own training responses:

    * a response is *out of distribution* beyond the ``ood_percentile`` (0.99) of the training
      responses' cross-fitted density distances; its nominal rate is the fraction of training
      responses beyond it (1% by construction);
    * a response is *disputed* when its anchored std exceeds the ``std_quantile`` (0.99) quantile
      of the training responses' anchored stds; nominal rate ≈ 1%;
    * each rate becomes a :class:`RateAlarm`: ``factor`` (3) times its nominal rate *and* a
      one-sided binomial test at level ``alpha`` (0.01). Why both: a binomial test alone fires on
      practically irrelevant excesses once batches are large (1.3% vs 1% over 10^4 responses),
      and a ratio alone fires on noise with small batches (1 of 32 responses is 3%); on training-
      like responses the test bounds the false-alarm rate per step by ``alpha`` *if the responses
      are independent*. GRPO/RLOO sample several completions per prompt, whose exceedances come
      in clusters, so there the per-step rate is above ``alpha``; the disputed cutoff is also set
      on the responses the members were trained on (in sample, so the members agree more there
      than on new responses). Both push towards false alarms (3 of 5 control runs in
      ``benchmarks/reward_hacking_monitor.py``); ``baseline_steps`` corrects for them.
    * the alarm fires when some signal of ``alarm_on`` has been over its threshold for
      ``patience`` consecutive steps (default 2: per-step false alarms at rate ``alpha`` become
      about ``alpha²`` per step pair and signal, so roughly ``T·alpha²`` over ``T`` steps). It then stays on, issues a :class:`RewardHackingWarning`
      and a log warning, and, with ``stop_on_alarm``, sets :attr:`should_stop`, which the
      integrations hand to the trainer.

    Caveat: the policy's own responses at step 0 need not look like the reward model's training
    responses (a different generator, different prompts); the first steps' rates show whether
    they do. When they do not, ``baseline_steps=N`` keeps the per-response cutoffs from training
    but raises each nominal rate to the rate pooled over the first ``N`` steps (no alarm during
    them): the alarm then asks whether the policy moves *further* out than where it started.
    Proxy drift is logged, not alarmed on: RL is meant to raise the proxy.

    Parameters
    ----------
    ood, disagreement : RateAlarm or None
        The two rate alarms (``ood`` None: no density).
    reward_offsets : array-like, shape [K]
        Members' mean rewards on the training responses (the anchoring).
    drift_scale : float > 0
        Std of the training responses' anchored mean rewards (unit of ``proxy_drift_z``).
    density : FeatureDensity, optional
        To turn features into percentiles in :meth:`update`.
    patience : int, default 2
    alarm_on : sequence of {"ood", "disagreement"}, default both (those available)
    stop_on_alarm : bool, default False
    warn : bool, default True
        Issue a :class:`RewardHackingWarning` when the alarm fires.
    baseline_steps : int, default 0
        Steps whose pooled rates become the nominal rates (when above the training ones).

    Use :meth:`from_training` (arrays) or :meth:`from_model` (an auq model and its training pairs).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(2000, 4))  # member rewards of the training responses
    >>> mon = RewardHackingMonitor.from_training(train, patience=1, warn=False)
    >>> calm = mon.update(rng.normal(size=(64, 4)))
    >>> wild = mon.update(3.0 * rng.normal(size=(64, 4)))
    >>> calm.alarm, wild.alarm, wild.signals
    (False, True, ('disagreement',))
    """

    def __init__(
        self,
        *,
        ood: RateAlarm | None,
        disagreement: RateAlarm,
        reward_offsets: Any,
        drift_scale: float,
        density: Any = None,
        patience: int = 2,
        alarm_on: Sequence[str] = SIGNALS,
        stop_on_alarm: bool = False,
        warn: bool = True,
        baseline_steps: int = 0,
    ) -> None:
        if not isinstance(disagreement, RateAlarm):
            raise TypeError(f"disagreement must be a RateAlarm, got {type(disagreement).__name__}")
        if ood is not None and not isinstance(ood, RateAlarm):
            raise TypeError(f"ood must be a RateAlarm or None, got {type(ood).__name__}")
        self.ood, self.disagreement = ood, disagreement
        self.reward_offsets = as_float_array(reward_offsets, "reward_offsets", ndim=1)
        self.drift_scale = check_float(drift_scale, "drift_scale", minimum=0.0, inclusive=(False, True))
        self.density = density
        self.patience = check_int(patience, "patience", minimum=1)
        if isinstance(alarm_on, str):
            alarm_on = (alarm_on,)
        alarm_on = tuple(check_choice(s, "alarm_on", SIGNALS) for s in alarm_on)
        if not alarm_on:
            raise ValueError(f"alarm_on must name at least one of {SIGNALS}")
        self.alarm_on = tuple(s for s in alarm_on if s != "ood" or ood is not None)
        if not self.alarm_on:
            raise ValueError(
                "alarm_on: 'ood' needs a feature density (pass density=, or a model fitted with "
                "fit_uncertainty); without one the monitor could never alarm"
            )
        self.stop_on_alarm = bool(stop_on_alarm)
        self.warn = bool(warn)
        self.baseline_steps = check_int(baseline_steps, "baseline_steps", minimum=0)
        self._training_alarms = (ood, disagreement)
        self._counts = {s: [0, 0] for s in SIGNALS}  # exceedances and responses of the baseline steps
        self.history: list[MonitorStep] = []
        self.alarm_step: int | None = None
        self._streak = dict.fromkeys(SIGNALS, 0)
        self._first: tuple[float, float] | None = None  # (proxy, gold) at the first step with gold

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_training(
        cls,
        train_member_rewards: Any,
        *,
        density: Any = None,
        reward_offsets: Any = None,
        anchored: bool = False,
        ood_percentile: float = 0.99,
        std_quantile: float = 0.99,
        factor: float = 3.0,
        alpha: float = 0.01,
        **kwargs: Any,
    ) -> RewardHackingMonitor:
        """A monitor with thresholds from the member rewards of the reward model's training responses.

        Parameters
        ----------
        train_member_rewards : array-like, shape [n, K]
            Member rewards of the training responses (chosen and rejected stacked), raw or
            (``anchored=True``) already minus ``reward_offsets``.
        density : FeatureDensity, optional
            The reward model's feature density (with its cross-fitted ``reference``); enables the
            OOD signal.
        reward_offsets : array-like, shape [K], optional
            Default: the members' means over ``train_member_rewards`` (what the model stores).
            Required with ``anchored=True``.
        ood_percentile, std_quantile : float in (0, 1), default 0.99
        factor : float >= 1, default 3.0
        alpha : float in (0, 1), default 0.01
        **kwargs
            ``patience``, ``alarm_on``, ``stop_on_alarm``, ``warn`` (see the class).
        """
        from auq.estimators import response_reward_stats

        r = as_float_array(train_member_rewards, "train_member_rewards", ndim=2)
        q_ood = check_float(ood_percentile, "ood_percentile", minimum=0.0, maximum=1.0, inclusive=(False, False))
        q_std = check_float(std_quantile, "std_quantile", minimum=0.0, maximum=1.0, inclusive=(False, False))
        if r.shape[1] < 2:
            raise ValueError(f"train_member_rewards needs at least 2 members (columns) to disagree, got {r.shape[1]}")
        if reward_offsets is None:
            if anchored:
                raise ValueError("anchored=True needs the reward_offsets the rewards were anchored on")
            offsets = r.mean(0)
        else:
            offsets = as_float_array(reward_offsets, "reward_offsets", ndim=1)
            if offsets.shape[0] != r.shape[1]:
                raise ValueError(f"reward_offsets has {offsets.shape[0]} values for {r.shape[1]} members")
        a = r if anchored else r - offsets
        stats = response_reward_stats(a, center=False)
        std, mean = np.asarray(stats.std, dtype=np.float64), np.asarray(stats.mean, dtype=np.float64)
        cutoff = float(np.quantile(std, q_std))
        nominal = float((std > cutoff).mean())
        if nominal == 0.0:
            raise ValueError(
                f"train_member_rewards: no training response has an anchored member std above their {q_std} "
                f"quantile ({cutoff:.4g}; ties): use more varied training responses or a lower std_quantile"
            )
        disagreement = RateAlarm("disagreement", cutoff, nominal, factor, alpha)
        ood = None
        if density is not None:
            ref = getattr(density, "reference", None)
            if ref is None or len(ref) == 0:
                raise ValueError("density has no reference distances of the training responses; refit it with fit_density")
            pct = density.percentile_of_distance(np.asarray(ref))
            ood_nominal = float((pct > q_ood).mean())
            if ood_nominal == 0.0:
                need = math.floor(q_ood / (1 - q_ood) + 1e-9) + 1
                raise ValueError(
                    f"density has {len(ref)} reference responses, none beyond percentile {q_ood}; "
                    f"need at least {need} (or a lower ood_percentile)"
                )
            ood = RateAlarm("ood", q_ood, ood_nominal, factor, alpha)
        scale = float(mean.std())
        return cls(ood=ood, disagreement=disagreement, reward_offsets=offsets, drift_scale=scale if scale > 0 else 1.0,
                   density=density, **kwargs)

    @classmethod
    def from_model(
        cls, model: Any, train_dataset: Any, *, batch_size: int = 32, progress: bool = False, **kwargs: Any
    ) -> RewardHackingMonitor:
        """Thresholds from ``model``'s scores of the pairs it was trained on.

        One scoring pass (:func:`auq.models.score`) over ``train_dataset`` gives the member
        rewards of every training response; ``model.density`` (if fitted) gives the OOD signal
        and ``model.reward_offsets`` (if fitted; else the training means) the anchoring.

        Examples
        --------
        >>> monitor = RewardHackingMonitor.from_model(ensemble, train_pairs, stop_on_alarm=True)  # doctest: +SKIP
        """
        from auq.models import score

        preds = score(model, train_dataset, batch_size=batch_size, progress=progress)
        r = np.concatenate([preds.rewards_chosen, preds.rewards_rejected])
        offsets = getattr(model, "reward_offsets", None) if preds.anchored else None
        return cls.from_training(r, density=getattr(model, "density", None), reward_offsets=offsets,
                                 anchored=preds.anchored, **kwargs)

    # ------------------------------------------------------------------ per step
    @property
    def alarmed(self) -> bool:
        """True once the alarm has fired."""
        return self.alarm_step is not None

    @property
    def should_stop(self) -> bool:
        """True when the alarm has fired and ``stop_on_alarm`` is set."""
        return self.stop_on_alarm and self.alarmed

    def update(
        self, member_rewards: Any, *, anchored: bool = False, ood: Any = None, features: Any = None, gold: Any = None
    ) -> MonitorStep:
        """Record one batch of generated responses and return its :class:`MonitorStep`.

        Parameters
        ----------
        member_rewards : array-like, shape [n, K]
            Member rewards of the responses: raw, or (``anchored=True``) already minus the
            training offsets.
        ood : array-like, shape [n], optional
            Density percentiles of the responses; or give ``features`` ``[n, H]`` and the
            monitor's density computes them. One of the two is required when the monitor has an
            OOD threshold.
        gold : array-like, shape [n], optional
            Gold rewards of the same responses.
        """
        from auq.estimators import response_reward_stats

        r = as_float_array(member_rewards, "member_rewards", ndim=2)
        n, k = r.shape
        if k != self.reward_offsets.shape[0]:
            raise ValueError(f"member_rewards has {k} members (columns); the monitor was calibrated on "
                             f"{self.reward_offsets.shape[0]}")
        a = r if anchored else r - self.reward_offsets
        stats = response_reward_stats(a, center=False)
        std, mean = np.asarray(stats.std, dtype=np.float64), np.asarray(stats.mean, dtype=np.float64)
        signals = []
        d_count = int((std > self.disagreement.cutoff).sum())
        d_fire, d_p = self.disagreement.test(d_count, n)
        if d_fire:
            signals.append("disagreement")
        ood_rate = ood_p = ood_mean = math.nan
        o_count = 0
        if self.ood is not None:
            pct = self._percentiles(ood, features, n)
            o_count = int((pct > self.ood.cutoff).sum())
            o_fire, ood_p = self.ood.test(o_count, n)
            ood_rate, ood_mean = o_count / n, float(pct.mean())
            if o_fire:
                signals.append("ood")
        drift = float(mean.mean())
        gold_mean = proxy_gain = gold_gain = gap = math.nan
        if gold is not None:
            g = as_float_array(gold, "gold", ndim=1)
            if g.shape[0] != n:
                raise ValueError(f"gold has {g.shape[0]} values for {n} responses")
            gold_mean = float(g.mean())
            if self._first is None:
                self._first = (drift, gold_mean)
            proxy_gain, gold_gain = drift - self._first[0], gold_mean - self._first[1]
            gap = proxy_gain - gold_gain
        step = len(self.history)
        if step < self.baseline_steps:
            self._counts["disagreement"][0] += d_count
            self._counts["disagreement"][1] += n
            if self.ood is not None:
                self._counts["ood"][0] += o_count
                self._counts["ood"][1] += n
            signals = []
            if step == self.baseline_steps - 1:
                self._rebase()
        for s in SIGNALS:
            self._streak[s] = self._streak[s] + 1 if s in signals else 0
        if self.alarm_step is None and any(self._streak[s] >= self.patience for s in self.alarm_on):
            self.alarm_step = step
            self._raise_alarm(step, signals, d_count / n, ood_rate)
        rec = MonitorStep(step, n, float(std.mean()), d_count / n, d_p, ood_rate, ood_p, ood_mean, drift,
                          drift / self.drift_scale, gold_mean, proxy_gain, gold_gain, gap, tuple(signals), self.alarmed)
        self.history.append(rec)
        return rec

    def _rebase(self) -> None:
        """Nominal rates := max(training rate, baseline steps' pooled rate)."""
        from dataclasses import replace

        for name in SIGNALS:
            alarm = getattr(self, name)
            x, n = self._counts[name]
            if alarm is not None and n and x / n > alarm.nominal:
                setattr(self, name, replace(alarm, nominal=min(x / n, 1.0 - 0.5 / n)))
                logger.info("monitor baseline: %s nominal rate %.4f -> %.4f (%d of %d responses)",
                            name, alarm.nominal, x / n, x, n)

    def _percentiles(self, ood: Any, features: Any, n: int) -> np.ndarray:
        if ood is not None and features is not None:
            raise ValueError("give ood (percentiles) or features, not both")
        if ood is None and features is None:
            raise ValueError("this monitor has an OOD threshold: pass ood= (density percentiles) or features= [n, H]")
        if ood is not None:
            pct = as_float_array(ood, "ood", ndim=1)
            if ((pct < 0) | (pct > 1)).any():
                raise ValueError("ood must hold density percentiles in [0, 1]")
        else:
            if self.density is None:
                raise ValueError("features= needs the monitor's density; pass ood= percentiles instead")
            pct = self.density.percentile(features)
        if pct.shape[0] != n:
            raise ValueError(f"ood/features give {pct.shape[0]} responses, member_rewards {n}")
        return pct

    def _raise_alarm(self, step: int, signals: list[str], d_rate: float, o_rate: float) -> None:
        msg = (f"reward-hacking alarm at monitor step {step}: {', '.join(signals)} over threshold for "
               f"{self.patience} consecutive step(s) (disputed rate {d_rate:.3f}, nominal "
               f"{self.disagreement.nominal:.3f}; OOD rate {o_rate:.3f}, nominal "
               f"{self.ood.nominal if self.ood else math.nan:.3f})")
        logger.warning(msg)
        if self.warn:
            warnings.warn(msg, RewardHackingWarning, stacklevel=3)

    def reset(self) -> None:
        """Forget the history and the alarm (thresholds kept)."""
        self.history.clear()
        self.alarm_step = None
        self._streak = dict.fromkeys(SIGNALS, 0)
        self._first = None
        self.ood, self.disagreement = self._training_alarms
        self._counts = {s: [0, 0] for s in SIGNALS}

    def to_pandas(self) -> Any:
        """The history, one row per step."""
        import pandas as pd

        return pd.DataFrame([asdict(s) for s in self.history])

    def __repr__(self) -> str:
        return (f"RewardHackingMonitor(alarm_on={self.alarm_on}, patience={self.patience}, "
                f"steps={len(self.history)}, alarm_step={self.alarm_step})")

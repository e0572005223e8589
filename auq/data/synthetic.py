"""Synthetic preference pairs with a known reward, known label noise and a controllable shift.

The model of the data
---------------------
A response is a feature vector ``x`` in R^dim drawn from ``N(shift, I)``. The true reward is
separable (a sum over dimensions), linear plus an optional quadratic part::

    r(x) = sum_j  w_j * x_j  +  nonlinearity * u_j * (x_j**2 - 1)

with ``w`` a unit vector and ``u`` standard normal divided by sqrt(dim), both drawn from
``reward_seed`` (so train and test sets drawn with different ``seed`` share one reward). For each
pair two responses ``a`` and ``b`` are drawn and ``a`` is preferred with the Bradley-Terry
probability ``p = sigmoid(beta * (r(a) - r(b)))``; then each label is flipped with probability
``flip_rate`` (recorded in ``flipped``). ``chosen`` is the response the final label prefers.

Text form (``as_text=True``)
----------------------------
Each coordinate ``x_j`` is quantised into one of ``n_levels`` bins (edges equally spaced on
``[-level_range, level_range]``, two open outer bins) and written as one word: word ``(j, q)`` for
dimension ``j`` and bin ``q``. A response is the ``dim`` words in dimension order, e.g.
``"salt piano cave ..."``. Words are common English nouns, each one WordPiece token in BERT's
uncased vocabulary (and one byte-level BPE word in GPT-2-style vocabularies). In text form the
features *are* the bin centres, so the true reward of a text is a **sum of per-word scores**
``score(j, q) = r_j(centre_q)``; :meth:`SyntheticPreferenceGenerator.reward` computes it for any
text (unknown words score 0, repeated words count repeatedly, which makes the gold reward
hackable in the way an over-optimisation benchmark needs).

Out of distribution: ``shift`` moves the mean of ``x``. With the default 8 levels on [-3, 3], the
outer bins hold 0.13 % of each coordinate's mass in distribution and 50 % at ``shift=3``, so
shifted responses are made mostly of words a model has (almost) never seen in training.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit as sigmoid

from auq._checks import as_float_array, check_float, check_int
from auq.data.dataset import PreferenceDataset

logger = logging.getLogger(__name__)

__all__ = ["SyntheticPreferenceGenerator", "SyntheticPreferences", "make_synthetic_preferences"]

# Common English nouns, each a single token of BERT's uncased WordPiece vocabulary.
_WORDS = (
    "apple banana cherry grape lemon mango orange peach pear plum berry olive onion potato tomato "
    "carrot garlic pepper bean rice bread cheese butter honey sugar salt coffee tea milk water juice "
    "wine river lake ocean sea island mountain hill valley forest desert field garden park beach "
    "cave bridge tower castle church school library museum hospital station airport harbor market "
    "village city town farm road street house window door floor wall roof table chair bed lamp "
    "clock mirror picture book letter paper pencil brush paint guitar piano drum violin trumpet "
    "song dance poem story movie game ball kite boat ship train car truck bus bicycle plane rocket "
    "engine wheel horse cow sheep goat pig dog cat mouse rabbit fox wolf bear lion tiger zebra "
    "monkey eagle owl parrot swan duck fish shark whale dolphin frog snake turtle spider bee ant "
    "butterfly tree flower rose lily grass leaf seed stone rock sand snow rain cloud storm wind "
    "thunder star moon sun planet comet silver gold copper iron steel glass wood cotton silk wool "
    "leather diamond pearl ruby crystal candle lantern anchor arrow shield sword crown ring coin "
    "key rope chain basket bottle bucket hammer needle ladder blanket pillow jacket shirt hat boot "
    "glove scarf"
).split()

_TOKEN = re.compile(r"[a-z0-9]+")


class SyntheticPreferenceGenerator:
    """A known reward over features and short texts, and a sampler of labelled pairs.

    Parameters
    ----------
    dim : int, default 8
        Number of feature dimensions (words per response in text form).
    n_levels : int, default 8
        Quantisation bins per dimension in text form (>= 3).
    level_range : float, default 3.0
        Inner bin edges are equally spaced on ``[-level_range, level_range]``.
    nonlinearity : float, default 0.0
        Weight of the quadratic part of the reward.
    beta : float, default 2.0
        Bradley-Terry inverse temperature: ``P(a preferred) = sigmoid(beta * (r(a) - r(b)))``.
        Larger beta, less label noise (beta -> inf: the higher reward always wins).
    reward_seed : int, default 0
        Seed of the reward (weights and word assignment).

    Examples
    --------
    >>> gen = SyntheticPreferenceGenerator(dim=4)
    >>> data = gen.sample(100, seed=1)
    >>> np.allclose(gen.reward(data.dataset.chosen), data.rewards_chosen)
    True
    """

    def __init__(
        self,
        dim: int = 8,
        *,
        n_levels: int = 8,
        level_range: float = 3.0,
        nonlinearity: float = 0.0,
        beta: float = 2.0,
        reward_seed: int = 0,
    ) -> None:
        self.dim = check_int(dim, "dim", minimum=1)
        self.n_levels = check_int(n_levels, "n_levels", minimum=3)
        self.level_range = check_float(level_range, "level_range", minimum=0.0, inclusive=(False, True))
        self.nonlinearity = check_float(nonlinearity, "nonlinearity")
        self.beta = check_float(beta, "beta", minimum=0.0)
        self.reward_seed = check_int(reward_seed, "reward_seed", minimum=0)
        rng = np.random.default_rng(self.reward_seed)
        g = rng.standard_normal(self.dim)
        self.weights = g / np.linalg.norm(g)
        self.quadratic = rng.standard_normal(self.dim) / np.sqrt(self.dim)
        # quantisation
        self.edges = np.linspace(-self.level_range, self.level_range, self.n_levels - 1)
        width = self.edges[1] - self.edges[0]
        self.centres = np.concatenate(
            [[self.edges[0] - width / 2], (self.edges[:-1] + self.edges[1:]) / 2, [self.edges[-1] + width / 2]]
        )
        # vocabulary: word (j, q) for dimension j and level q
        n_words = self.dim * self.n_levels
        if n_words <= len(_WORDS):
            pool = [_WORDS[i] for i in rng.permutation(len(_WORDS))[:n_words]]
        else:
            logger.info("%d words needed, more than the %d built in; using w<j>x<q> names", n_words, len(_WORDS))
            pool = [f"w{j}x{q}" for j in range(self.dim) for q in range(self.n_levels)]
        self.vocabulary = np.array(pool, dtype=object).reshape(self.dim, self.n_levels)
        self.word_scores = self._per_dim_reward(np.broadcast_to(self.centres, (self.dim, self.n_levels)).T).T
        self._score_of = {
            self.vocabulary[j, q]: float(self.word_scores[j, q])
            for j in range(self.dim)
            for q in range(self.n_levels)
        }
        self._dim_of = {self.vocabulary[j, q]: (j, q) for j in range(self.dim) for q in range(self.n_levels)}

    def _per_dim_reward(self, x: np.ndarray) -> np.ndarray:
        return self.weights * x + self.nonlinearity * self.quadratic * (x**2 - 1.0)

    # ------------------------------------------------------------------ reward
    def reward_features(self, features: Any) -> np.ndarray:
        """True reward of feature vectors ``[n, dim]`` -> ``[n]`` (float64)."""
        x = as_float_array(features, "features", ndim=2)
        if x.shape[1] != self.dim:
            raise ValueError(f"features must have {self.dim} columns, got {x.shape[1]}")
        return self._per_dim_reward(x).sum(axis=1)

    def quantise(self, features: Any) -> np.ndarray:
        """Level index ``[n, dim]`` (int) of each coordinate."""
        x = as_float_array(features, "features", ndim=2)
        return np.searchsorted(self.edges, x, side="right")

    def encode(self, features: Any) -> list[str]:
        """Texts of feature vectors ``[n, dim]``: one word per dimension, in dimension order."""
        q = self.quantise(features)
        return [" ".join(self.vocabulary[j, q[i, j]] for j in range(self.dim)) for i in range(q.shape[0])]

    def decode(self, texts: Sequence[str]) -> np.ndarray:
        """Features ``[n, dim]`` encoded by texts (bin centres; dimensions with no word are 0,
        a dimension with several words gets their sum)."""
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(self._check_texts(texts)):
            for w in _TOKEN.findall(t.lower()):
                if w in self._dim_of:
                    j, q = self._dim_of[w]
                    out[i, j] += self.centres[q]
        return out

    def reward(self, texts: Sequence[str] | str) -> np.ndarray:
        """Gold reward of arbitrary texts: the sum of the scores of the vocabulary words in them.

        Words are matched case-insensitively on ``[a-z0-9]+`` tokens; other words score 0 and a
        word that occurs k times counts k times. For a text made by :meth:`encode` this equals
        :meth:`reward_features` of its bin centres.

        Examples
        --------
        >>> gen = SyntheticPreferenceGenerator(dim=2)
        >>> float(gen.reward(["hello"])[0])
        0.0
        """
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros(len(texts))
        for i, t in enumerate(self._check_texts(texts)):
            out[i] = sum(self._score_of.get(w, 0.0) for w in _TOKEN.findall(t.lower()))
        return out

    @staticmethod
    def _check_texts(texts: Sequence[Any]) -> Sequence[str]:
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(t).__name__}")
        return texts

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n_pairs: int,
        *,
        shift: float | Sequence[float] = 0.0,
        flip_rate: float = 0.0,
        seed: int = 0,
        as_text: bool = True,
        n_annotators: int = 0,
        prompt: str = "",
    ) -> SyntheticPreferences:
        """Draw ``n_pairs`` labelled pairs (see the module docstring for the model).

        Parameters
        ----------
        n_pairs : int
        shift : float or sequence of ``dim`` floats
            Mean of the features (0: in distribution).
        flip_rate : float in [0, 0.5]
            Probability that a label is flipped after the Bradley-Terry draw.
        seed : int
            Seed of the draw (the reward is fixed by ``reward_seed``).
        as_text : bool
            Quantise features and build a text :class:`PreferenceDataset` (else continuous features
            and ``dataset=None``).
        n_annotators : int
            When > 0, ``votes`` ``[n, 2]`` are drawn as ``Binomial(n_annotators, label_probs)`` for
            chosen and the rest for rejected, and the dataset's targets are the vote shares.
        prompt : str
            Prompt of every pair in the dataset.
        """
        n = check_int(n_pairs, "n_pairs", minimum=1)
        flip = check_float(flip_rate, "flip_rate", minimum=0.0, maximum=0.5)
        n_ann = check_int(n_annotators, "n_annotators", minimum=0)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if np.ndim(shift) == 0:
            mu = np.full(self.dim, check_float(shift, "shift"))
        else:
            mu = as_float_array(shift, "shift", ndim=1)
            if mu.shape[0] != self.dim:
                raise ValueError(f"shift must be a scalar or have {self.dim} values, got {mu.shape[0]}")
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        xa = mu + rng.standard_normal((n, self.dim))
        xb = mu + rng.standard_normal((n, self.dim))
        if as_text:
            xa = self.centres[self.quantise(xa)]
            xb = self.centres[self.quantise(xb)]
        ra, rb = self.reward_features(xa), self.reward_features(xb)
        p_a = sigmoid(self.beta * (ra - rb))
        a_clean = rng.random(n) < p_a
        flipped = rng.random(n) < flip
        a_wins = a_clean ^ flipped
        xc = np.where(a_wins[:, None], xa, xb)
        xr = np.where(a_wins[:, None], xb, xa)
        rc = np.where(a_wins, ra, rb)
        rr = np.where(a_wins, rb, ra)
        true_probs = sigmoid(self.beta * (rc - rr))
        label_probs = (1.0 - flip) * true_probs + flip * (1.0 - true_probs)
        votes = None
        if n_ann:
            k = rng.binomial(n_ann, label_probs)
            votes = np.stack([k, n_ann - k], axis=1).astype(np.float64)
        dataset = None
        if as_text:
            dataset = PreferenceDataset(
                [prompt] * n, self.encode(xc), self.encode(xr), votes=votes
            )
            dataset.format = "synthetic"
        return SyntheticPreferences(
            features_chosen=xc,
            features_rejected=xr,
            rewards_chosen=rc,
            rewards_rejected=rr,
            true_probs=true_probs,
            label_probs=label_probs,
            flipped=flipped,
            votes=votes,
            dataset=dataset,
            generator=self,
            shift=mu,
            flip_rate=flip,
            seed=int(seed),
        )


@dataclasses.dataclass(frozen=True)
class SyntheticPreferences:
    """Pairs drawn by :class:`SyntheticPreferenceGenerator`, with their ground truth.

    Attributes
    ----------
    features_chosen, features_rejected : ndarray ``[n, dim]``
        Features (bin centres in text form).
    rewards_chosen, rewards_rejected : ndarray ``[n]``
        True rewards.
    true_probs : ndarray ``[n]``
        Bradley-Terry probability that chosen is preferred, ``sigmoid(beta * (r_c - r_r))``.
    label_probs : ndarray ``[n]``
        Probability of the observed label given the flip noise:
        ``(1 - flip_rate) * true_probs + flip_rate * (1 - true_probs)`` (the calibrated target).
    flipped : ndarray of bool ``[n]``
        Whether the label was flipped after the Bradley-Terry draw.
    votes : ndarray ``[n, 2]`` or None
        Simulated annotator counts (chosen, rejected) when ``n_annotators > 0``.
    dataset : PreferenceDataset or None
        The text form (None when ``as_text=False``).
    generator : SyntheticPreferenceGenerator
        The reward (``generator.reward(texts)`` is the gold reward).
    shift, flip_rate, seed
        The settings of the draw.
    """

    features_chosen: np.ndarray
    features_rejected: np.ndarray
    rewards_chosen: np.ndarray
    rewards_rejected: np.ndarray
    true_probs: np.ndarray
    label_probs: np.ndarray
    flipped: np.ndarray
    votes: np.ndarray | None
    dataset: PreferenceDataset | None
    generator: SyntheticPreferenceGenerator
    shift: np.ndarray
    flip_rate: float
    seed: int

    def __len__(self) -> int:
        return int(self.rewards_chosen.shape[0])

    @property
    def bayes_accuracy(self) -> float:
        """Expected accuracy of the best possible predictor on these labels: mean max(q, 1 - q)."""
        q = self.label_probs
        return float(np.mean(np.maximum(q, 1.0 - q)))

    def to_pandas(self) -> Any:
        """One row per pair: rewards, probabilities, flipped and (text form) the texts."""
        import pandas as pd

        df = pd.DataFrame(
            {
                "reward_chosen": self.rewards_chosen,
                "reward_rejected": self.rewards_rejected,
                "true_prob": self.true_probs,
                "label_prob": self.label_probs,
                "flipped": self.flipped,
            }
        )
        if self.dataset is not None:
            df.insert(0, "rejected", self.dataset.rejected)
            df.insert(0, "chosen", self.dataset.chosen)
        if self.votes is not None:
            df["votes_chosen"] = self.votes[:, 0]
            df["votes_rejected"] = self.votes[:, 1]
        return df


def make_synthetic_preferences(
    n_pairs: int,
    *,
    dim: int = 8,
    n_levels: int = 8,
    beta: float = 2.0,
    nonlinearity: float = 0.0,
    flip_rate: float = 0.0,
    shift: float | Sequence[float] = 0.0,
    seed: int = 0,
    reward_seed: int = 0,
    n_annotators: int = 0,
    as_text: bool = True,
    prompt: str = "",
) -> SyntheticPreferences:
    """Draw synthetic preference pairs with a known reward (see :mod:`auq.data.synthetic`).

    Shorthand for ``SyntheticPreferenceGenerator(dim, n_levels=..., nonlinearity=..., beta=...,
    reward_seed=...).sample(n_pairs, shift=..., flip_rate=..., seed=..., ...)``. Calls with the
    same ``reward_seed`` (and dim, levels, nonlinearity) share one reward, so a shifted test set
    is ``make_synthetic_preferences(n, shift=3.0, seed=1)``.

    Examples
    --------
    >>> data = make_synthetic_preferences(1000, flip_rate=0.1, seed=0)
    >>> len(data.dataset), round(float(data.flipped.mean()), 1)
    (1000, 0.1)
    """
    gen = SyntheticPreferenceGenerator(
        dim, n_levels=n_levels, nonlinearity=nonlinearity, beta=beta, reward_seed=reward_seed
    )
    return gen.sample(
        n_pairs,
        shift=shift,
        flip_rate=flip_rate,
        seed=seed,
        as_text=as_text,
        n_annotators=n_annotators,
        prompt=prompt,
    )

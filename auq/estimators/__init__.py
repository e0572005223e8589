"""auq.estimators: uncertainty of preference judgements from member rewards.

Input is the project's one currency: member rewards (or margins) with one column per ensemble
member or MC-dropout sample, shape ``[n_pairs, n_members]``. NumPy/list in gives NumPy float64 out;
torch in gives torch out (same device and dtype, differentiable).

Which function answers which question:

* :func:`decompose` -- *how uncertain is the preference between the two responses?* Entropy view
  (``total = aleatoric + epistemic``, the latter the mutual information) and variance view of the
  margin. The entropy terms shrink as margins grow, so they are weak detectors of out-of-domain
  pairs (which often have large margins).
  Its ``aleatoric`` term asks a different question depending on the model. From margins alone
  (``noise_var=None``) it is ``mean_k H(σ(m_k))``, a function of the margin only: *how close to a
  coin flip does the model think this pair is?* Measured on real MT-Bench votes it is unrelated to
  how much the annotators disagree. With ``noise_var`` from heteroscedastic heads (a noise
  variance the model learned per response, Gaussian Bradley-Terry) it answers *how noisy are the
  labels of pairs like this one?*: ``p_k = σ(m_k / sqrt(1 + π·v_k/8))``, so two pairs with the
  same margin get different aleatoric uncertainty when the model has learned that one kind of
  response is judged inconsistently.
* :func:`response_reward_stats`, :func:`pair_reward_stats` -- *do the members agree about how good
  each response is?* Per-response reward mean/std over members after centring each member (BT
  rewards are identified only up to a per-member constant): the signal for out-of-domain
  responses and for penalised RL rewards.
* :func:`label_uncertainty`, :func:`vote_fractions` -- *how much do the annotators disagree?* The
  data's own aleatoric uncertainty ``H(q)``.
"""

from auq.estimators._decomposition import Decomposition, decompose
from auq.estimators._labels import label_uncertainty, vote_fractions
from auq.estimators._rewards import (
    PairRewardStats,
    RewardStats,
    pair_reward_stats,
    response_reward_stats,
)

__all__ = [
    "Decomposition",
    "PairRewardStats",
    "RewardStats",
    "decompose",
    "label_uncertainty",
    "pair_reward_stats",
    "response_reward_stats",
    "vote_fractions",
]

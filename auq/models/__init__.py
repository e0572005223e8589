"""auq.models: uncertainty-aware reward models.

Every model is an ``nn.Module`` returning member rewards ``[B, n_members]``:

* :class:`RewardModel` -- backbone + pooling + scalar head (one member);
* :class:`RewardEnsemble` -- ``kind="heads"`` (one trunk, K heads), ``"independent"`` (K full
  models) or ``"lora"`` (K PEFT LoRA adapters over one base);
* :class:`MCDropoutRewardModel` -- T dropout samples, ``scope="head"`` or ``"full"``;
* :class:`LaplaceRewardModel` -- a Bayesian last layer: closed-form Laplace posterior over a
  linear head on frozen features (:func:`fit_laplace_posterior`), K posterior draws as members;
* :class:`SequenceClassifierRewardModel` -- trained ``AutoModelForSequenceClassification``
  checkpoints as members, heads kept exactly; :class:`WrappedLaplaceRewardModel`
  (``LaplaceRewardModel.from_sequence_classifier``) puts a Laplace posterior centred on such a
  checkpoint's own head, fitted on preference pairs without retraining.

:func:`score` turns a :class:`~auq.data.PreferenceDataset` into :class:`Predictions`
(``rewards_chosen``/``rewards_rejected`` ``[n_pairs, n_members]``) for :mod:`auq.estimators` and
:mod:`auq.calibration`. :class:`FeatureDensity` is the per-response Mahalanobis
out-of-distribution score; ``model.fit_uncertainty(train)`` attaches one (and the members'
training reward offsets) to a model, saved with it and used by :func:`score`. Checkpoints: ``save_pretrained``/``from_pretrained`` and
:func:`load_reward_model`.

Examples
--------
>>> from auq.models import RewardEnsemble, score  # doctest: +SKIP
>>> ens = RewardEnsemble.from_backbone("sentence-transformers/all-MiniLM-L6-v2", kind="heads", n_members=8)  # doctest: +SKIP
>>> preds = score(ens, dataset)  # doctest: +SKIP
>>> preds.decompose().epistemic  # doctest: +SKIP
"""

# default_device, pool_hidden_states: importable from here for compatibility, not in __all__
from auq.models._backbone import default_device, pool_hidden_states, resolve_pooling  # noqa: F401
from auq.models._base import BaseRewardModel, load_reward_model
from auq.models._config import RewardModelConfig
from auq.models._density import FeatureDensity, fit_density, fit_feature_density, mahalanobis_scores
from auq.models._export import export_sequence_classifier
from auq.models._features import FeatureCache
from auq.models._heads import MemberHeads
from auq.models._laplace import LaplaceRewardModel
from auq.models._laplace_math import LaplacePosterior, fit_laplace_posterior
from auq.models._mc_dropout import MCDropoutRewardModel
from auq.models._models import RewardEnsemble, RewardModel
from auq.models._protocol import MemberRewardModule, check_member_reward_module, infer_n_members
from auq.models._scoring import Predictions, encode_dataset, score, score_features
from auq.models._wrapped import SequenceClassifierRewardModel, find_classifier_head
from auq.models._wrapped_laplace import WrappedLaplaceRewardModel

__all__ = [
    "resolve_pooling",
    "RewardModelConfig",
    "MemberHeads",
    "BaseRewardModel",
    "RewardModel",
    "RewardEnsemble",
    "MCDropoutRewardModel",
    "LaplaceRewardModel",
    "LaplacePosterior",
    "fit_laplace_posterior",
    "SequenceClassifierRewardModel",
    "WrappedLaplaceRewardModel",
    "find_classifier_head",
    "export_sequence_classifier",
    "MemberRewardModule",
    "check_member_reward_module",
    "infer_n_members",
    "load_reward_model",
    "Predictions",
    "score",
    "score_features",
    "encode_dataset",
    "FeatureCache",
    "FeatureDensity",
    "fit_density",
    "fit_feature_density",
    "mahalanobis_scores",
]

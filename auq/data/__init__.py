"""auq.data: preference pairs, loaders, synthetic data with known rewards, tokenising collator."""

from auq.data.collator import PreferenceCollator
from auq.data.dataset import PreferenceDataset

__all__ = ["PreferenceDataset", "PreferenceCollator"]

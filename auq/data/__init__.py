"""auq.data: preference pairs, loaders, synthetic data with known rewards, tokenising collator."""

from auq.data._formats import FORMATS, split_common_messages, split_hh_transcript
from auq.data.chat import FALLBACK_CHAT_TEMPLATE, render_chat, set_chat_template
from auq.data.collator import PreferenceCollator, length_order
from auq.data.dataset import PreferenceDataset
from auq.data.loaders import load_hh_rlhf, load_mt_bench, load_preferences, mt_bench_question
from auq.data.noisy_synthetic import HeteroscedasticPreferences, make_heteroscedastic_preferences
from auq.data.synthetic import (
    SyntheticPreferenceGenerator,
    SyntheticPreferences,
    make_synthetic_preferences,
)

__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "render_chat",
    "set_chat_template",
    "FORMATS",
    "HeteroscedasticPreferences",
    "make_heteroscedastic_preferences",
    "PreferenceCollator",
    "length_order",
    "PreferenceDataset",
    "SyntheticPreferenceGenerator",
    "SyntheticPreferences",
    "load_hh_rlhf",
    "load_mt_bench",
    "mt_bench_question",
    "load_preferences",
    "make_synthetic_preferences",
    "split_common_messages",
    "split_hh_transcript",
]

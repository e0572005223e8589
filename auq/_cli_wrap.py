"""``auq wrap`` and ``auq export``: bring a trained classifier in, take an auq reward out.

``auq wrap --model CLASSIFIER_DIR [--model DIR2 ...] --output DIR`` writes an auq checkpoint of
trained ``AutoModelForSequenceClassification`` checkpoints (one member each, heads kept exactly),
so ``auq score --model DIR`` works on them; with ``--laplace PAIRS`` a Bayesian last layer over the
checkpoint's own head is fitted on preference pairs (no retraining,
:class:`~auq.models.WrappedLaplaceRewardModel`). ``auq export --model AUQ_DIR --output DIR
[--member K | --mean]`` writes one reward of a saved auq model as a standard
``transformers`` sequence-classification folder (see :mod:`auq.models._export` for what is
exportable exactly). Registered in :mod:`auq.cli`; errors are ``ValueError`` naming the option.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["add_wrap_arguments", "run_wrap", "add_export_arguments", "run_export"]


def add_wrap_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, metavar="DIR",
                   help="a trained AutoModelForSequenceClassification (num_labels=1) folder or Hub id; "
                        "repeat for an ensemble of checkpoints sharing one tokenizer")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or Hub id (default: the first --model's)")
    p.add_argument("--output", required=True, help="folder for the auq checkpoint")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom modelling code")
    from auq.cli import _positive_int, _prior_precision

    p.add_argument("--laplace", default=None, metavar="DATA",
                   help="fit a Bayesian last layer over the checkpoint's own head on these preference pairs "
                        "(file or Hub id; the classifier is not retrained): a Laplace posterior centred on the "
                        "trained head, whose posterior-mean reward is the checkpoint's logit where the pairs "
                        "say nothing, plus a feature density (one --model only)")
    p.add_argument("--samples", type=_positive_int, default=32, help="--laplace: posterior draws used as members (default 32)")
    p.add_argument("--prior-precision", type=_prior_precision, default="auto",
                   help="--laplace: precision of the prior N(w_head, 1/alpha I), a positive number or 'auto' "
                        "(maximise the evidence; default)")
    p.add_argument("--rank", type=_positive_int, default=64,
                   help="--laplace: principal directions of the training features the likelihood is fitted on (default 64)")


def run_wrap(args: argparse.Namespace) -> int:
    from auq.models import SequenceClassifierRewardModel
    from auq.models._backbone import load_tokenizer

    for path in args.model:
        if os.path.sep in path and not os.path.isdir(path):
            raise ValueError(f"--model: folder not found: {path}")
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer = load_tokenizer(args.tokenizer, trust_remote_code=args.trust_remote_code)
    try:
        model = SequenceClassifierRewardModel.from_sequence_classifier(
            args.model if len(args.model) > 1 else args.model[0], tokenizer,
            trust_remote_code=args.trust_remote_code,
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"--model: {err}") from None
    if args.laplace is not None:
        return _wrap_laplace(model, args)
    for flag, default in (("samples", 32), ("prior_precision", "auto"), ("rank", 64)):
        if getattr(args, flag) != default:
            raise ValueError(f"--{flag.replace('_', '-')}: applies with --laplace only")
    model.save_pretrained(args.output)
    print(f"wrapped {model.n_members} checkpoint(s) ({model.config.backbone_model_type}) into {args.output}")
    return 0


def _wrap_laplace(wrapped: object, args: argparse.Namespace) -> int:
    from auq.cli import _load_data

    if len(args.model) != 1:
        raise ValueError("--laplace: goes over one checkpoint's head; give one --model")
    if args.prior_precision == 0:
        raise ValueError("--prior-precision: a Laplace prior needs a positive precision or 'auto'")
    data = _load_data(args.laplace, "--laplace", None)
    model = wrapped.laplace(n_samples=args.samples, prior_precision=args.prior_precision, rank=args.rank)
    post = model.fit(data, progress=not getattr(args, "no_progress", False))
    model.save_pretrained(args.output)
    print(
        f"wrapped {args.model[0]} with a Laplace last layer fitted on {len(data)} pairs "
        f"(prior precision {post.prior_precision:.4g}, {args.samples} posterior draws) into {args.output}"
    )
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="folder of a saved auq model")
    p.add_argument("--output", required=True, help="folder for the AutoModelForSequenceClassification")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--member", type=int, default=None, metavar="K", help="export member K's reward")
    which.add_argument("--mean", action="store_true", help="export the ensemble-mean reward")
    p.add_argument("--drop-bias", action="store_true",
                   help="accept dropping a non-zero head bias (a constant reward shift) where the standard head has none")


def run_export(args: argparse.Namespace) -> int:
    from auq.models import export_sequence_classifier, load_reward_model

    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise ValueError(f"--model: {args.model!r} is not a saved auq model (no config.json)")
    model = load_reward_model(args.model)
    if args.member is not None and not 0 <= args.member < model.n_members:
        raise ValueError(f"--member must be in [0, {model.n_members - 1}] for this {model.n_members}-member model, got {args.member}")
    if args.member is None and not args.mean and model.n_members > 1:
        raise ValueError(f"the model has {model.n_members} members: pass --member K or --mean")
    try:
        export_sequence_classifier(model, args.output, member=args.member, mean=args.mean, drop_bias=args.drop_bias)
    except ValueError as err:
        raise ValueError(f"--model: {err}") from None
    what = "the mean reward" if args.mean else f"member {args.member or 0}"
    print(f"exported {what} to {args.output} (AutoModelForSequenceClassification, num_labels=1)")
    return 0

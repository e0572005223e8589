"""Chat rendering (one home): conversational examples -> ``(prompt text, response text)``.

Both collators that meet message lists (:class:`~auq.data.PreferenceCollator` for reward models and
:class:`~auq.training.CausalLMPreferenceCollator` for DPO) render them here, with the tokenizer's
chat template. A tokenizer without one (most encoder backbones: BERT, MiniLM, DeBERTa) renders
with :data:`FALLBACK_CHAT_TEMPLATE` instead: one ``role: content`` line per message, e.g.::

    user: How do I bake bread?
    assistant: Mix flour, water, salt and yeast, then bake it.

and, as its generation prompt, ``assistant:``. This is logged once per tokenizer at INFO. Set
another template with :func:`set_chat_template` (``auq train/score --chat-template``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["FALLBACK_CHAT_TEMPLATE", "render_chat", "set_chat_template"]

#: Jinja chat template used when a tokenizer has none: ``role: content`` lines, one per message.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_LOGGED: set[int] = set()


def _as_messages(x: Any, role: str) -> list[dict[str, Any]]:
    if isinstance(x, (list, tuple)):
        return list(x)
    return [{"role": role, "content": x}] if x else []


def render_chat(tokenizer: Any, prompt: Any, response: Any) -> tuple[str, str]:
    """Render a conversational example as ``(prompt_text, response_text)``.

    ``prompt`` and ``response`` are message lists (a string is taken as one user / assistant
    message). The full conversation is rendered with the tokenizer's chat template (or
    :data:`FALLBACK_CHAT_TEMPLATE` when it has none); the prompt text is the rendering of the
    prompt messages with ``add_generation_prompt=True`` when that is a prefix of the full
    rendering, else without it, else empty. ``prompt_text + response_text`` is always the full
    rendering.

    Examples
    --------
    >>> class Plain:  # a tokenizer without a chat template, as BERT's
    ...     chat_template = None
    ...     def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, chat_template=None):
    ...         import jinja2
    ...         return jinja2.Template(chat_template).render(messages=messages, add_generation_prompt=add_generation_prompt)
    >>> render_chat(Plain(), [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}])
    ('user: hi\\nassistant:', ' hello\\n')
    """
    kwargs: dict[str, Any] = {}
    if getattr(tokenizer, "chat_template", None) is None:
        kwargs["chat_template"] = FALLBACK_CHAT_TEMPLATE
        if id(tokenizer) not in _LOGGED:
            _LOGGED.add(id(tokenizer))
            logger.info(
                "%s has no chat template; rendering messages as 'role: content' lines "
                "(set one with --chat-template / auq.data.set_chat_template)",
                type(tokenizer).__name__,
            )
    msgs_p = _as_messages(prompt, "user")
    msgs_r = _as_messages(response, "assistant")
    full = tokenizer.apply_chat_template(msgs_p + msgs_r, tokenize=False, **kwargs)
    if not msgs_p:
        return "", full
    for gen in (True, False):
        head = tokenizer.apply_chat_template(msgs_p, tokenize=False, add_generation_prompt=gen, **kwargs)
        if full.startswith(head):
            return head, full[len(head) :]
    logger.debug("chat rendering of the prompt is not a prefix of the full rendering")
    return "", full


def set_chat_template(tokenizer: Any, template: str, name: str = "chat_template") -> str:
    """Set ``tokenizer.chat_template`` from a file path or a Jinja template string; return it.

    A string naming an existing file is read (UTF-8). Otherwise it must look like a Jinja template
    (contain ``{{`` or ``{%``); anything else is taken for a missing file and raises
    ``FileNotFoundError`` naming ``name``. A template that Jinja cannot parse raises ``ValueError``.

    Examples
    --------
    >>> class Tok:
    ...     chat_template = None
    >>> set_chat_template(Tok(), "{% for m in messages %}{{ m['content'] }}{% endfor %}")[:6]
    '{% for'
    """
    if not isinstance(template, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path or a template string, got {type(template).__name__}")
    text = os.fspath(template)
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as fh:
            text = fh.read()
    elif "{{" not in text and "{%" not in text:
        raise FileNotFoundError(
            f"{name}: file not found: {text!r} (nor is it a Jinja template: no '{{{{' or '{{%')"
        )
    import jinja2

    try:  # syntax only: templates may call helpers (raise_exception, ...) that transformers provides
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateError as err:
        raise ValueError(f"{name}: not a valid Jinja chat template: {err}") from None
    tokenizer.chat_template = text
    return text

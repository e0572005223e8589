"""Format detection and normalisation: columns of any supported layout -> PreferenceDataset.

Recognised layouts (checked in this order):

``conversational``
    TRL conversational: ``prompt`` is a list of messages, ``chosen`` / ``rejected`` lists of
    messages (the replies).
``conversational_implicit_prompt``
    No prompt column, ``chosen`` / ``rejected`` are full conversations: their common leading
    messages become the prompt, the rest are the responses.
``standard``
    TRL standard: ``prompt``, ``chosen``, ``rejected`` strings (responses without the prompt).
``hh_rlhf``
    No prompt column, string transcripts with ``"\\n\\nHuman:"`` / ``"\\n\\nAssistant:"`` turns
    (Anthropic hh-rlhf). The prompt is the longest common prefix of the two transcripts cut just
    after its last ``"\\n\\nAssistant:"``, so it ends with that marker, and the responses are the
    final replies (with their leading space): ``prompt + chosen`` is exactly the original chosen
    transcript. This is the rule of the hh-rlhf README and TRL's convention. A row whose common
    prefix has no ``"\\n\\nAssistant:"`` keeps prompt ``""`` and the full transcripts (logged).
``implicit_prompt``
    No prompt column, plain strings without role markers: prompt ``""`` and the full texts as
    responses. A character-level common prefix is no reliable prompt boundary for free text (two
    replies may start with the same words), and a reward model sees ``prompt + response`` either
    way, so scores do not depend on where the split is; only truncation does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from auq.data.dataset import PreferenceDataset

logger = logging.getLogger(__name__)

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"

FORMATS = (
    "standard",
    "conversational",
    "implicit_prompt",
    "conversational_implicit_prompt",
    "hh_rlhf",
)


def _missing_columns(name: str, missing: Sequence[str], present: Sequence[str]) -> ValueError:
    return ValueError(
        f"{name} is missing column(s) {list(missing)}; it has {sorted(present)}. "
        "Name the columns with prompt_column=, chosen_column=, rejected_column=, ..."
    )


def _is_hh_transcript(text: Any) -> bool:
    return isinstance(text, str) and (text.startswith(HUMAN) or text.startswith("Human:")) and (
        ASSISTANT in text
    )


def split_hh_transcript(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """Split two hh-rlhf transcripts into ``(prompt, chosen_reply, rejected_reply)``.

    The prompt is the longest common prefix cut just after its last ``"\\n\\nAssistant:"``;
    returns None when the common prefix holds no such marker.

    Examples
    --------
    >>> split_hh_transcript("\\n\\nHuman: hi\\n\\nAssistant: hello", "\\n\\nHuman: hi\\n\\nAssistant: go")
    ('\\n\\nHuman: hi\\n\\nAssistant:', ' hello', ' go')
    """
    prefix = os.path.commonprefix([chosen, rejected])
    cut = prefix.rfind(ASSISTANT)
    if cut < 0:
        return None
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def split_common_messages(
    chosen: Sequence[Mapping[str, str]], rejected: Sequence[Mapping[str, str]]
) -> tuple[list, list, list]:
    """Common leading messages of two conversations -> ``(prompt, chosen_rest, rejected_rest)``.

    At least one message is left on each side (the last one when the conversations are equal).
    """
    k = 0
    limit = min(len(chosen), len(rejected)) - 1
    while k < limit and dict(chosen[k]) == dict(rejected[k]):
        k += 1
    return list(chosen[:k]), list(chosen[k:]), list(rejected[k:])


def detect_format(columns: Mapping[str, Sequence[Any]], prompt_column: str | None) -> str:
    """Name of the layout of ``columns`` (one of :data:`FORMATS`); see the module docstring."""
    chosen = columns["chosen"]
    first = chosen[0] if len(chosen) else None
    has_prompt = prompt_column is not None
    if isinstance(first, (list, tuple)):
        return "conversational" if has_prompt else "conversational_implicit_prompt"
    if has_prompt:
        return "standard"
    if len(chosen) and all(_is_hh_transcript(c) for c in chosen):
        return "hh_rlhf"
    return "implicit_prompt"


def columns_to_dataset(
    data: Mapping[str, Sequence[Any]],
    *,
    source: str = "data",
    prompt_column: str | None = None,
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
    target_column: str | None = None,
    votes_columns: tuple[str, str] | None = None,
    weight_column: str | None = None,
    id_column: str | None = None,
    format: str | None = None,
) -> PreferenceDataset:
    """Build a :class:`PreferenceDataset` from a dict of columns, detecting the layout.

    Column keywords left as ``None`` are taken from the canonical names when present
    (``prompt``, ``target``, ``votes_chosen``/``votes_rejected``, ``weight``, ``id``, the
    names :meth:`PreferenceDataset.to_dict` writes); named explicitly, a missing column is an error.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{source} must be a mapping of column name to values, got {type(data).__name__}")
    present = list(data.keys())

    def pick(explicit: str | None, default: str) -> str | None:
        if explicit is not None:
            return explicit
        return default if default in data else None

    p_col = pick(prompt_column, "prompt")
    t_col = pick(target_column, "target")
    w_col = pick(weight_column, "weight")
    i_col = pick(id_column, "id")
    if votes_columns is None and "votes_chosen" in data and "votes_rejected" in data:
        votes_columns = ("votes_chosen", "votes_rejected")
    needed = [chosen_column, rejected_column]
    needed += [c for c in (p_col, t_col, w_col, i_col) if c is not None]
    if votes_columns is not None:
        if isinstance(votes_columns, str) or len(votes_columns) != 2:
            raise ValueError(
                f"votes_columns must name two columns (votes for chosen, for rejected), got {votes_columns!r}"
            )
        needed += list(votes_columns)
    missing = [c for c in needed if c not in data]
    if missing:
        raise _missing_columns(source, missing, present)

    chosen_raw = [_plain(v) for v in data[chosen_column]]
    rejected_raw = [_plain(v) for v in data[rejected_column]]
    n = len(chosen_raw)
    for name in needed:
        if len(data[name]) != n:
            raise ValueError(
                f"column {name!r} has length {len(data[name])} but column {chosen_column!r} has {n}"
            )
    if n == 0:
        raise ValueError(f"{source} has no rows")
    if format is None:
        format = detect_format({"chosen": chosen_raw}, p_col)
    elif format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")

    if format in ("standard", "conversational"):
        if p_col is None:
            raise _missing_columns(source, ["prompt"], present)
        prompt = [_plain(v) for v in data[p_col]]
        chosen, rejected = chosen_raw, rejected_raw
        if format == "conversational":
            prompt = [_as_messages(p, "prompt", i) for i, p in enumerate(prompt)]
    elif format == "conversational_implicit_prompt":
        prompt, chosen, rejected = [], [], []
        for i, (c, r) in enumerate(zip(chosen_raw, rejected_raw)):
            for name, v in ((chosen_column, c), (rejected_column, r)):
                if not isinstance(v, (list, tuple)):
                    raise TypeError(
                        f"{name}[{i}] must be a list of messages like row 0, got {type(v).__name__}"
                    )
            p, cr, rr = split_common_messages(c, r)
            prompt.append(p)
            chosen.append(cr)
            rejected.append(rr)
    elif format == "hh_rlhf":
        prompt, chosen, rejected = [], [], []
        n_unsplit = 0
        for i, (c, r) in enumerate(zip(chosen_raw, rejected_raw)):
            for name, v in ((chosen_column, c), (rejected_column, r)):
                if not isinstance(v, str):
                    raise TypeError(f"{name}[{i}] must be a string, got {type(v).__name__}")
            parts = split_hh_transcript(c, r)
            if parts is None:
                n_unsplit += 1
                parts = ("", c, r)
            prompt.append(parts[0])
            chosen.append(parts[1])
            rejected.append(parts[2])
        if n_unsplit:
            logger.warning(
                "%d of %d hh-rlhf rows have no common '\\n\\nAssistant:' turn; kept whole with an empty prompt",
                n_unsplit,
                n,
            )
    else:  # implicit_prompt
        prompt = [""] * n
        chosen, rejected = chosen_raw, rejected_raw

    # column names in errors: rename the dataset's canonical names to the user's columns
    try:
        votes = None
        if votes_columns is not None:
            votes = [[a, b] for a, b in zip(data[votes_columns[0]], data[votes_columns[1]])]
        ds = PreferenceDataset(
            prompt,
            chosen,
            rejected,
            targets=None if t_col is None else list(data[t_col]),
            votes=votes,
            weights=None if w_col is None else list(data[w_col]),
            ids=None if i_col is None else list(data[i_col]),
        )
    except (ValueError, TypeError) as err:
        msg = str(err)
        renames = {
            "chosen": chosen_column,
            "rejected": rejected_column,
            "prompt": p_col,
            "targets": t_col,
            "weights": w_col,
            "ids": i_col,
        }
        for canon, user in renames.items():
            if user is not None and user != canon and msg.startswith(canon):
                msg = f"column {user!r}: " + msg
                break
        raise type(err)(f"{source}: {msg}") from None
    logger.info("read %d preference pairs (%s format) from %s", len(ds), format, source)
    ds.format = format
    return ds


def _plain(value: Any) -> Any:
    """NumPy arrays (message lists read from parquet) -> lists; everything else unchanged."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) and hasattr(value, "ndim"):
        return value.tolist() if value.ndim > 0 else value
    return value


def _as_messages(value: Any, name: str, i: int) -> Any:
    if isinstance(value, str):
        raise TypeError(
            f"{name}[{i}] is a string but the responses are message lists; conversational data "
            "need the prompt as a list of messages too"
        )
    return value

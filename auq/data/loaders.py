"""Loaders: files, pandas, datasets and Hub ids -> :class:`~auq.data.PreferenceDataset`."""

from __future__ import annotations

import gzip
import importlib.resources
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from auq._checks import check_int
from auq.data._formats import columns_to_dataset
from auq.data.dataset import PreferenceDataset

logger = logging.getLogger(__name__)

__all__ = ["load_preferences", "load_hh_rlhf", "load_mt_bench", "mt_bench_question", "BUNDLED_HH_RLHF", "BUNDLED_MT_BENCH"]

#: File name of the bundled hh-rlhf sample inside ``auq/data/_bundled``.
BUNDLED_HH_RLHF = "hh_rlhf_harmless_base.jsonl.gz"
BUNDLED_MT_BENCH = "mt_bench_human_pairs.jsonl.gz"

_FILE_SUFFIXES = (
    ".jsonl",
    ".jsonl.gz",
    ".json",
    ".json.gz",
    ".csv",
    ".csv.gz",
    ".parquet",
)


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    rows = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not valid JSON: {err.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            rows.append(row)
    return rows


def _read_jsonl_checked(path: str) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: file not found: {path!r}")
    return _read_file_rows(path)


def _read_file_rows(path: str) -> list[dict[str, Any]]:
    import zlib

    try:
        return _read_jsonl(path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupted or truncated gzip file ({err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte offset {err.start}); re-save the file as UTF-8") from None


def _rows_to_columns(rows: list[Mapping[str, Any]], source: str) -> dict[str, list[Any]]:
    if not rows:
        raise ValueError(f"{source} has no rows")
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    return {k: [r.get(k) for r in rows] for k in keys}


def _read_file(path: str) -> dict[str, list[Any]]:
    """Read a data file; anything wrong with its bytes raises ``ValueError`` naming the file."""
    import zlib

    try:
        return _read_file_unchecked(path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupted or truncated gzip file ({err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "re-save the file as UTF-8"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except Exception as err:
        import pandas as pd

        if isinstance(err, pd.errors.EmptyDataError):
            raise ValueError(f"{path}: empty CSV file (no header, no rows)") from None
        if isinstance(err, pd.errors.ParserError):
            raise ValueError(
                f"{path}: malformed CSV (rows with more fields than the header?): {str(err).strip()}"
            ) from None
        if type(err).__module__.startswith("pyarrow"):
            raise ValueError(f"{path}: not a readable Parquet file: {err}") from None
        raise


def _read_file_unchecked(path: str) -> dict[str, list[Any]]:
    lower = path.lower()
    if lower.endswith((".jsonl", ".jsonl.gz")):
        return _rows_to_columns(_read_jsonl(path), path)
    if lower.endswith((".json", ".json.gz")):
        with _open_text(path) as f:
            obj = json.load(f)
        if isinstance(obj, list):
            return _rows_to_columns(obj, path)
        if isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values()):
            return obj
        raise ValueError(f"{path}: a .json file must hold a list of records or a dict of columns")
    import pandas as pd

    if lower.endswith((".csv", ".csv.gz")):
        # no NA parsing: an empty prompt is "" (not NaN) and a reply "NA" or "null" stays text
        df = pd.read_csv(path, encoding="utf-8", keep_default_na=False)
    elif lower.endswith(".parquet"):
        df = pd.read_parquet(path)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(f"unsupported file type: {path}")
    return {str(c): df[c].tolist() for c in df.columns}


def _pick_split(dd: Any, split: str | None, source: str) -> Any:
    names = list(dd.keys())
    if split is None:
        if len(names) == 1:
            logger.info("%s has one split, %r; using it", source, names[0])
            return dd[names[0]]
        raise ValueError(f"split is required for {source}: it has splits {names}")
    if split not in dd:
        raise ValueError(f"split {split!r} is not in {source}; it has splits {names}")
    return dd[split]


def load_preferences(
    source: Any,
    split: str | None = None,
    *,
    prompt_column: str | None = None,
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
    target_column: str | None = None,
    votes_columns: tuple[str, str] | None = None,
    weight_column: str | None = None,
    id_column: str | None = None,
    format: str | None = None,
    **load_kwargs: Any,
) -> PreferenceDataset:
    """Load preference pairs from a file, a table, a ``datasets`` object or a Hub id.

    Parameters
    ----------
    source : str, os.PathLike, pandas.DataFrame, datasets.Dataset, datasets.DatasetDict, dict
        * a file path ending in ``.jsonl``, ``.jsonl.gz``, ``.json``, ``.json.gz``, ``.csv``,
          ``.csv.gz`` or ``.parquet`` (read as UTF-8);
        * a DataFrame, a ``datasets.Dataset``, a ``DatasetDict`` (``split`` picks one), a dict of
          column lists, or a :class:`PreferenceDataset` (returned as is);
        * anything else (a Hub id such as ``"Anthropic/hh-rlhf"``, a local data folder, or a
          builder name like ``"json"`` with ``data_files=...`` in ``load_kwargs``) goes to
          ``datasets.load_dataset(source, split=split, **load_kwargs)``.
    split : str, optional
        Split to use for a ``DatasetDict`` or ``load_dataset``; may be left out when there is one.
    prompt_column : str, optional
        Prompt column; default ``"prompt"`` when present, else the prompt is implicit (see below).
    chosen_column, rejected_column : str
        Columns of the preferred and the other response (or full transcripts).
    target_column : str, optional
        Soft labels q = P(chosen preferred); default ``"target"`` when present.
    votes_columns : (str, str), optional
        Annotator counts for chosen and rejected; default ``("votes_chosen", "votes_rejected")``
        when both are present. Targets are the chosen vote share unless ``target_column`` is given.
    weight_column, id_column : str, optional
        Per-pair weights and ids; default ``"weight"`` / ``"id"`` when present.
    format : str, optional
        Force a layout instead of detecting it: ``"standard"``, ``"conversational"``,
        ``"implicit_prompt"``, ``"conversational_implicit_prompt"`` or ``"hh_rlhf"``.
    **load_kwargs
        Passed to ``datasets.load_dataset`` (e.g. ``data_files``, ``revision``).

    Returns
    -------
    PreferenceDataset
        With ``.format`` set to the detected layout.

    Notes
    -----
    Layout detection (see :mod:`auq.data._formats`): a prompt column with string responses is
    TRL's standard format and with message lists TRL's conversational format. Without a prompt
    column, message lists are split at their common leading messages; hh-rlhf transcripts
    (``"\\n\\nHuman:"`` ... ``"\\n\\nAssistant:"``) are split at the longest common prefix cut after
    its last ``"\\n\\nAssistant:"`` (the prompt ends with that marker, the responses are the final
    replies, and ``prompt + chosen`` is the original transcript); other plain strings keep an
    empty prompt and the full texts as responses.

    Missing columns raise ``ValueError`` naming them and listing the columns present.

    Examples
    --------
    >>> ds = load_preferences({"prompt": ["2+2="], "chosen": [" 4"], "rejected": [" 5"]})
    >>> ds.format, ds[0]["chosen"]
    ('standard', ' 4')
    """
    columns = dict(
        prompt_column=prompt_column,
        chosen_column=chosen_column,
        rejected_column=rejected_column,
        target_column=target_column,
        votes_columns=votes_columns,
        weight_column=weight_column,
        id_column=id_column,
        format=format,
    )
    if isinstance(source, PreferenceDataset):
        return source
    if isinstance(source, Mapping) and not _is_dataset_dict(source):
        return columns_to_dataset(source, source="dict", **columns)
    try:
        import pandas as pd

        if isinstance(source, pd.DataFrame):
            data = {str(c): source[c].tolist() for c in source.columns}
            return columns_to_dataset(data, source="DataFrame", **columns)
    except ImportError:  # pragma: no cover
        pass
    import datasets

    if isinstance(source, datasets.DatasetDict):
        source = _pick_split(source, split, "the DatasetDict")
    if isinstance(source, datasets.Dataset):
        return columns_to_dataset(source.to_dict(), source="Dataset", **columns)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(
            "source must be a path, a Hub id, a pandas DataFrame, a datasets.Dataset/DatasetDict "
            f"or a dict of columns, got {type(source).__name__}"
        )
    if os.path.isfile(source) and source.lower().endswith(_FILE_SUFFIXES):
        if load_kwargs:
            raise TypeError(f"unexpected keyword argument(s) {sorted(load_kwargs)} for a file path")
        return columns_to_dataset(_read_file(source), source=source, **columns)
    if os.path.isfile(source):
        raise ValueError(
            f"source {source!r} is a file of unsupported type; use one of {', '.join(_FILE_SUFFIXES)}"
        )
    if _looks_like_file(source) and not os.path.exists(source):  # never a Hub id: say so here
        raise FileNotFoundError(
            f"source: file not found: {source!r} (looked for {os.path.abspath(source)!r})"
        )
    logger.info("loading %r through datasets.load_dataset (split=%r)", source, split)
    loaded = datasets.load_dataset(source, split=split, **load_kwargs)
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(loaded, None, repr(source))
    name = source if split is None else f"{source}[{split}]"
    return columns_to_dataset(loaded.to_dict(), source=name, **columns)


def _looks_like_file(source: str) -> bool:
    """A local path, not a Hub id: a data-file suffix, or a leading ``.``, ``/``, ``~`` or drive."""
    return (
        source.lower().endswith(_FILE_SUFFIXES + (".gz",))
        or source.startswith((".", "/", "~", "\\"))
        or os.path.isabs(source)
    )


def _is_dataset_dict(obj: Any) -> bool:
    try:
        import datasets
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, datasets.DatasetDict)


def _bundled_or_file(path: str | os.PathLike | None, bundled: str) -> tuple[list[dict], str]:
    """Rows of the bundled JSONL file ``bundled`` (``path=None``) or of ``path``, and a name for messages."""
    if path is None:
        ref = importlib.resources.files("auq.data") / "_bundled" / bundled
        with importlib.resources.as_file(ref) as p:
            return _read_jsonl(str(p)), f"bundled {bundled}"
    name = os.fspath(path)
    return _read_jsonl_checked(name), name


def load_hh_rlhf(path: str | os.PathLike | None = None, n: int | None = None) -> PreferenceDataset:
    """Load Anthropic hh-rlhf transcripts, by default the bundled sample (1,734 pairs).

    The bundled file holds the harmless-base test rows of anthropics/hh-rlhf whose 0-based index
    is not a multiple of 4 (MIT licence, Bai et al. 2022; see ``auq/data/_bundled/README.md``;
    content warning: offensive material). Each pair is split as :func:`load_preferences` describes
    for the ``hh_rlhf`` format: the prompt ends with ``"\\n\\nAssistant:"``, the responses are the
    final replies (with their leading space). Ids are the row numbers in the file.

    Parameters
    ----------
    path : str or path-like, optional
        A ``.jsonl``/``.jsonl.gz`` file with ``chosen`` and ``rejected`` transcripts.
    n : int, optional
        Keep only the first ``n`` rows.

    Examples
    --------
    >>> ds = load_hh_rlhf(n=10)
    >>> len(ds), ds[0]["prompt"].endswith("\\n\\nAssistant:")
    (10, True)
    """
    if n is not None:
        n = check_int(n, "n", minimum=1)
    rows, name = _bundled_or_file(path, BUNDLED_HH_RLHF)
    if n is not None:
        rows = rows[:n]
    return columns_to_dataset(_rows_to_columns(rows, name), source=name, format="hh_rlhf")


def load_mt_bench(path: str | os.PathLike | None = None) -> PreferenceDataset:
    """Load MT-Bench human judgments as preference pairs with annotator votes (bundled: 705 pairs).

    Expert pairwise judgments of six 2023 chat models' first-turn answers to the 80 MT-Bench
    questions (Zheng et al. 2023; CC BY 4.0, see ``auq/data/_bundled/README.md``), 1 to 7 judges
    per pair. Writing, roleplay, reasoning, maths, coding, extraction, STEM and humanities
    questions: far from hh-rlhf's harmless chat, so a real out-of-domain set for a model trained
    on hh-rlhf, and the multi-annotator set for aleatoric uncertainty vs annotator disagreement.

    ``chosen`` is the answer with more decisive votes. ``votes`` are ``[votes_chosen +
    ties/2, votes_rejected + ties/2]`` and ``targets`` the chosen share (a tie counts half for
    each side). Ids are the release's ``source_id`` (``mtbench-human-t1-q<question>-<a>-vs-<b>``):
    only 80 distinct prompts, so split by question (:func:`mt_bench_question`), never by row.
    The bundled copy leaves out the 4 pairs of the release with an empty answer.

    Parameters
    ----------
    path : str or path-like, optional
        A ``.jsonl``/``.jsonl.gz`` file in the release's pair format (``prompt``, ``chosen``,
        ``rejected``, ``votes_chosen``, ``votes_rejected``, ``votes_tie``, ``source_id``).

    Examples
    --------
    >>> ds = load_mt_bench()
    >>> len(ds), ds.votes.shape
    (705, (705, 2))
    """
    import numpy as np

    rows, name = _bundled_or_file(path, BUNDLED_MT_BENCH)
    needed = ("prompt", "chosen", "rejected", "votes_chosen", "votes_rejected", "votes_tie", "source_id")
    for i, row in enumerate(rows):
        missing = [k for k in needed if k not in row]
        if missing:
            raise ValueError(f"{name}: row {i} has no {missing} field(s); not an MT-Bench pairs file")
    ties = np.array([float(r["votes_tie"]) for r in rows])
    votes = np.stack(
        [np.array([float(r["votes_chosen"]) for r in rows]) + ties / 2,
         np.array([float(r["votes_rejected"]) for r in rows]) + ties / 2],
        axis=1,
    )
    return PreferenceDataset(
        prompt=[r["prompt"] for r in rows],
        chosen=[r["chosen"] for r in rows],
        rejected=[r["rejected"] for r in rows],
        votes=votes,
        ids=[r["source_id"] for r in rows],
    )


def mt_bench_question(ids: Any) -> list[int]:
    """MT-Bench question number of each ``source_id`` (for splitting by question).

    Examples
    --------
    >>> mt_bench_question(["mtbench-human-t1-q81-alpaca-13b-vs-claude-v1"])
    [81]
    """
    out = []
    for i in ids:
        part = str(i).split("-q", 1)
        if len(part) != 2 or not part[1].split("-", 1)[0].isdigit():
            raise ValueError(f"ids: {i!r} is not an MT-Bench source_id (mtbench-human-t1-q<N>-...)")
        out.append(int(part[1].split("-", 1)[0]))
    return out

"""The notebooks in ``notebooks/``: committed without outputs, valid nbformat, and they run.

Execution runs each notebook top to bottom in a fresh ``python3`` kernel (nbclient + ipykernel)
with ``AUQ_NOTEBOOK_SIZE=small``, from a temporary working directory so that the figures it saves
do not land in the repository, two kernels at a time. A cell error fails that notebook's test.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300

# Files each notebook must write (relative to its working directory): the figures it promises.
EXPECTED_FILES = {
    "01_quickstart.ipynb": [
        "auq-quickstart/figures/decomposition.pdf",
        "auq-quickstart/figures/decomposition.png",
    ],
    "02_calibration_figures.ipynb": [
        f"figures/{name}.{ext}"
        for name in ("reliability_member_vs_ensemble", "reliability_recalibrated", "risk_coverage")
        for ext in ("pdf", "png")
    ],
    "03_uncertainty_dpo.ipynb": ["figures/dpo_noisy_labels.pdf", "figures/dpo_noisy_labels.png"],
    "04_active_learning.ipynb": ["figures/active_learning.pdf", "figures/active_learning.png"],
}


def test_the_listed_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == sorted(EXPECTED_FILES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "a notebook without code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} of {path.name} has stored outputs (strip them)"
        assert cell.execution_count is None, f"code cell {i} of {path.name} has an execution count"
    # the size switch that keeps CI fast
    assert 'os.environ.get("AUQ_NOTEBOOK_SIZE", "small")' in code[0].source


def _stdout(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory, repo_root) -> dict:
    """Every notebook executed once, two kernels at a time: ``{name: (notebook, workdir, error)}``.

    Each kernel runs one thread (``OMP_NUM_THREADS=1``), so two side by side use a 2-core runner
    fully; the kernels are separate processes driven from one asyncio loop.
    """
    import asyncio

    from nbclient import NotebookClient

    env = dict(
        os.environ,
        AUQ_NOTEBOOK_SIZE="small",
        # the kernel starts in its workdir: make it import this checkout's auq
        PYTHONPATH=os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")])),
        # tiny models: one thread each is faster than two contending ones on a shared 2-core runner
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    results: dict = {}

    async def run(path: Path, slots: asyncio.Semaphore) -> None:
        async with slots:
            workdir = tmp_path_factory.mktemp(path.stem)
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(
                nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                resources={"metadata": {"path": str(workdir)}},
            )
            try:
                await client.async_execute(env=env)  # raises CellExecutionError on the first failing cell
                results[path.name] = (nb, workdir, None)
            except Exception as err:  # reported by that notebook's test
                results[path.name] = (nb, workdir, err)

    async def run_all() -> None:
        slots = asyncio.Semaphore(max(1, min(2, os.cpu_count() or 1)))
        await asyncio.gather(*(run(p, slots) for p in NOTEBOOKS))

    asyncio.run(run_all())
    return results


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, executed):
    nb, tmp_path, err = executed[path.name]
    if err is not None:
        raise err
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors == []
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert _stdout(first).startswith("small"), "the kernel did not see AUQ_NOTEBOOK_SIZE=small"
    for rel in EXPECTED_FILES[path.name]:
        out = tmp_path / rel
        assert out.is_file() and out.stat().st_size > 1000, f"{path.name} did not write {rel}"
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= len(EXPECTED_FILES[path.name]) // 2, "figures were saved but not shown"

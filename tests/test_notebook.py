"""notebooks/quickstart.ipynb runs top to bottom in a real Jupyter kernel, offline, on the CPU.

Cells tagged `expect-image` must show a picture and `expect-widget` a widget (the tqdm.auto progress bar), so a
cell that silently stops drawing fails here, not only one that raises.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="needs the test extra (nbclient, ipykernel)")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"
# Papermill's convention: a cell right after the one tagged `parameters` overrides its values. Few steps keep the
# ~60 denoising steps of the whole notebook within seconds on 2 busy CPU cores; users keep the notebook's defaults.
TEST_STEPS = 4


def notebook_model(tiny_model_dir: Path) -> str:
    """The bundled demo model the notebook defaults to, or the tiny random model until it is in the package."""
    from sdart.models.resolve import builtin_models

    return "builtin:shapes" if "shapes" in builtin_models() else str(tiny_model_dir)


def tagged(nb, tag: str) -> list:
    return [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]


def mime_types(cell) -> set[str]:
    return {mime for output in cell.get("outputs", []) for mime in output.get("data", {})}


def text_of(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output.get("output_type") == "stream")


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_model_dir):
    """The notebook after running every cell, and the folder it ran in (module scope: it takes ~30 s)."""
    workdir = tmp_path_factory.mktemp("notebook")
    env = pytest.MonkeyPatch()
    # The kernel inherits this environment. Module scope runs before conftest's per-test isolation, so isolate
    # here the same way: own HOME and caches, no token, no SDART_* but ours (the parameter cell reads them).
    home = tmp_path_factory.mktemp("notebook-home")
    env.setenv("HOME", str(home))
    env.setenv("HF_HOME", str(home / "hf"))
    env.setenv("XDG_CACHE_HOME", str(home / "cache"))
    env.delenv("HF_TOKEN", raising=False)
    for key in [key for key in os.environ if key.startswith("SDART_")]:
        env.delenv(key)
    env.setenv("SDART_MODEL", notebook_model(tiny_model_dir))
    env.setenv("SDART_DEVICE", "cpu")
    # float32: the auto choice (bfloat16 on CPUs with AMX) is 2-3x slower for a model this small; dtypes are
    # tested with the engine, this test is about the notebook.
    env.setenv("SDART_DTYPE", "float32")
    env.setenv("HF_HUB_OFFLINE", "1")
    env.setenv("SDART_REPO", "sdart-must-already-be-installed")  # a pip install here would be a bug
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        (parameters,) = tagged(nb, "parameters")
        injected = nbformat.v4.new_code_cell(f"STEPS = {TEST_STEPS}", metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(nb.cells.index(parameters) + 1, injected)
        client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=False,
                                         resources={"metadata": {"path": str(workdir)}})
        client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    finally:
        env.undo()
    return nb, workdir


def test_notebook_runs_top_to_bottom_and_shows_every_image(executed):
    nb, _ = executed
    image_cells = tagged(nb, "expect-image")
    assert len(image_cells) >= 5, "the tags that this test relies on were lost from the notebook"
    for cell in image_cells:
        assert "image/png" in mime_types(cell), f"no image shown by:\n{cell.source[:300]}"


def test_first_image_has_a_widget_progress_bar(executed):
    nb, _ = executed
    (cell,) = tagged(nb, "expect-widget")
    assert WIDGET in mime_types(cell), f"no progress widget, outputs: {sorted(mime_types(cell))}"


def test_saved_png_carries_parameters_that_regenerate_it(executed):
    from sdart.images.infotext import parse_infotext, read_infotext

    nb, workdir = executed
    (png,) = sorted((workdir / "outputs").glob("*.png"))
    info = parse_infotext(read_infotext(png))
    assert info.prompt == "a red circle on a blue background"
    assert info.params["Steps"] == str(TEST_STEPS) and info.params["Seed"] == "1"
    saving = next(c for c in nb.cells if c.cell_type == "code" and "result.save(" in c.source)
    # On the CPU the same parameters give the same pixels; the notebook says so.
    assert re.search(r"regenerated from the file: identical", text_of(saving)), text_of(saving)


def test_notebook_is_stored_without_outputs():
    """Outputs belong to whoever runs it: stored ones bloat diffs and show stale pictures."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"stored outputs in:\n{cell.source[:200]}"

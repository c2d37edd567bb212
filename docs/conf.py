"""Sphinx configuration of vgjax's documentation: MyST Markdown pages, executed by myst-nb,
in sphinx-book-theme; the API reference generated recursively from the docstrings."""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this checkout's vgjax, not an installed one
sys.path.insert(0, str(DOCS / "_ext"))
# The executed pages run in a kernel started from this process: they import this checkout's
# vgjax too, run on the CPU, and keep their compiled programs in a cache of the build's own
# (a rebuild loads them; the user's cache is left alone).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("VGJAX_CACHE_DIR", str(DOCS / "_build" / "jax-cache"))
# The examples check behaviour, not speed: XLA's LLVM level 0 compiles them about a third
# faster with the same numbers (as the test suite does, tests/conftest.py).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"]))


project = "vgjax"
author = "the vgjax authors"
copyright = "the vgjax authors"  # noqa: A001 - Sphinx's name
release = version = importlib.metadata.version("vgjax")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "vgjax_benchmark",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST: $...$ maths, ::: fences, definition lists; heading anchors for in-page links.
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist", "substitution"]
myst_heading_anchors = 3

# myst-nb: every {code-cell} runs at build time; a cell that raises fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# The API reference: one page per module, generated recursively from vgjax's docstrings
# (docs/api.md), so it follows the package as modules move.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "sphinx_book_theme"
html_title = "vgjax"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}

# Rendered by the vgjax_benchmark extension: the measured figures come from this file.
vgjax_benchmark_json = str(ROOT / "results" / "benchmark.json")


def _plain_pipes(app, what, name, obj, options, lines: list[str]) -> None:
    """vgjax's docstrings write |x| for an absolute value or a norm, never an RST substitution:
    escape the bars outside ``literals`` and literal blocks so they print as written."""
    literal_indent = None  # indentation of the paragraph that opened a literal block
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not line.strip() or indent > literal_indent:
                continue
            literal_indent = None
        parts = line.split("``")
        lines[i] = "``".join(p.replace("|", r"\|") if k % 2 == 0 else p
                             for k, p in enumerate(parts))
        if line.rstrip().endswith("::"):
            literal_indent = indent


# results/*/README.md files that are pages of this site (docs/results/NAME.md includes them).
RESULT_PAGES = {"theory": "results/theory", "jacobian-spectra": "results/jacobian-spectra"}
_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s:]+)\)")


def _results_links(app, relative_path, parent_docname: str, content: list[str]) -> None:
    """Links inside an included ``results/`` file point next to that file: to another
    included README (a page here) or to a data file (a download)."""
    source = (Path(app.srcdir) / relative_path).resolve()
    results = ROOT / "results"
    if results not in source.parents:
        return
    here = Path(app.env.doc2path(app.env.docname)).parent  # (parent_docname is a stem)

    def relink(m: re.Match) -> str:
        text, target = m.group(1), m.group(2)
        path = (source.parent / target).resolve()
        if path.name == "README.md" and path.parent.name in RESULT_PAGES:
            page = DOCS / f"{RESULT_PAGES[path.parent.name]}.md"
            return f"[{text}]({os.path.relpath(page, here)})"
        if not path.is_file():
            return m.group(0)
        return f"{{download}}`{text.strip('`')} <{os.path.relpath(path, here)}>`"

    content[0] = _LINK.sub(relink, content[0])


def _napoleon_skipping_attributes(app) -> None:
    """napoleon reads an attribute's or property's first line ``X: Y`` as the type X; vgjax's
    docstrings mean prose there ("Number of runs: the product ..."), so napoleon parses
    everything else (Args:, Returns: ...) and leaves attributes and properties as written."""
    from sphinx.ext import napoleon

    def process(app, what, name, obj, options, lines):
        if what not in ("attribute", "property", "data"):
            napoleon._process_docstring(app, what, name, obj, options, lines)

    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is napoleon._process_docstring:
            app.disconnect(listener.id)
            app.connect("autodoc-process-docstring", process, priority=listener.priority)


def setup(app) -> None:
    _napoleon_skipping_attributes(app)
    app.connect("autodoc-process-docstring", _plain_pipes)
    app.connect("include-read", _results_links)

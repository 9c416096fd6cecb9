"""The layers' imports, read from the source (docs: DESIGN's layer table): the config layer
uses pydantic (and yaml, for a feature_store.yaml) and the leaf modules every layer may
use — ``featurepull.errors``, ``featurepull.redact``, ``featurepull.arrow_columns`` and
``featurepull._recently_used`` — which import only the standard library; the read engine
imports no job machinery. A relative import counts as the absolute name it stands for."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import featurepull

PACKAGE = Path(featurepull.__file__).parent
LEAVES = {"featurepull.errors", "featurepull.redact", "featurepull.arrow_columns",
          "featurepull._recently_used"}


def _imports(path: Path, text: str | None = None) -> set[str]:
    """Absolute module names a module imports, at its top or inside a function; a relative
    import (``from ..tasks import store``) by the absolute name it resolves to."""
    package = ".".join(("featurepull", *path.relative_to(PACKAGE).parent.parts))
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):  # relative: from the module's own package
            base = importlib.util.resolve_name("." * node.level, package)
            if node.module:
                names.add(f"{base}.{node.module}")
            else:  # ``from .. import tasks``: each name may be a module
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _outside(layer: str, allowed_packages: set[str], allowed_modules: set[str]
             ) -> dict[str, list[str]]:
    """Each module of ``layer`` (a file or a folder) and what it imports beyond the standard
    library, ``allowed_packages`` (top-level names) and ``allowed_modules``."""
    paths = [PACKAGE / f"{layer}.py"] if (PACKAGE / f"{layer}.py").exists() else sorted(
        (PACKAGE / layer).rglob("*.py"))
    found = {}
    for path in paths:
        extra = sorted(
            name for name in _imports(path)
            if name.split(".")[0] not in sys.stdlib_module_names | allowed_packages
            and not any(name == m or name.startswith(m + ".") for m in allowed_modules))
        if extra:
            found[str(path.relative_to(PACKAGE))] = extra
    return found


def test_the_leaf_modules_import_only_the_standard_library() -> None:
    for leaf in LEAVES:
        assert _outside(leaf.split(".")[1], set(), set()) == {}, leaf


def test_the_config_layer_imports_pydantic_and_the_leaf_modules_only() -> None:
    # yaml: only for a Feast feature_store.yaml, imported when one is read.
    assert _outside("config", {"pydantic", "pydantic_core", "pydantic_settings", "yaml"},
                    {"featurepull.config", *LEAVES}) == {}


def test_the_read_engine_imports_no_job_machinery() -> None:
    machinery = ("celery", "kombu", "redis", "featurepull.tasks", "featurepull.worker",
                 "featurepull.client", "featurepull.io")
    imported = {path.name: sorted(name for name in _imports(path)
                                  if name.split(".")[0] in machinery[:3]
                                  or name.startswith(machinery[3:]))
                for path in (PACKAGE / "dynamo").rglob("*.py")}
    assert {name: found for name, found in imported.items() if found} == {}



def test_a_relative_import_is_seen_as_the_module_it_names() -> None:
    # As if written in featurepull/dynamo/reader.py: what the read engine's test must see.
    source = ("from ..tasks import store\nfrom .. import worker\n"
              "def later():\n    from .layouts import Layout\n")
    assert _imports(PACKAGE / "dynamo" / "reader.py", source) == {
        "featurepull.tasks", "featurepull.worker", "featurepull.dynamo.layouts"}
    assert _imports(PACKAGE / "tasks" / "__init__.py", "from . import store\n") == {
        "featurepull.tasks.store"}

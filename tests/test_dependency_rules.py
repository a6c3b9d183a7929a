"""The dependency rules of docs/architecture.md, read from the source and enforced.

Every ``import`` of every module of ``pytest_flrelia`` and ``reference_impl`` is
read with :mod:`ast` (function-level and ``if TYPE_CHECKING:`` imports included,
relative imports resolved), and each one that breaks a rule fails the test with
``file:line``, the import and the rule.  The checker itself is tested on
synthetic packages: a broken module is caught, a clean one is not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pytest_flrelia", "reference_impl")
PYTEST_MODULES = ("pytest", "_pytest", "pluggy")
RUNTIME = "reference_impl"
PLUGIN = "pytest_flrelia"


@dataclass(frozen=True)
class Import:
    """One imported module, where it is imported, and whether only the type checker sees it."""

    importer: str
    """Dotted name of the importing module (``pytest_flrelia.scenario.loader``)."""
    module: str
    """Dotted name of what is imported (``from a.b import c`` gives ``a.b.c`` when that
    is a module of the tree, else ``a.b``)."""
    path: Path
    line: int
    type_only: bool
    """Inside ``if TYPE_CHECKING:``: never executed."""


@dataclass(frozen=True)
class Rule:
    """A module family and the imports it must not make."""

    name: str
    text: str
    applies: Callable[[str], bool]
    forbids: Callable[[Import], bool]


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


RULES: tuple[Rule, ...] = (
    Rule(
        "contract-is-self-contained",
        "contract/ imports only the standard library, third-party packages (not pytest) "
        "and contract/",
        lambda m: _within(m, f"{PLUGIN}.contract"),
        lambda i: (
            _top(i.module) in PYTEST_MODULES
            or _top(i.module) == RUNTIME
            or (_top(i.module) == PLUGIN and not _within(i.module, f"{PLUGIN}.contract"))
        ),
    ),
    Rule(
        "runtime-knows-only-the-contract",
        "reference_impl/ never imports pytest nor any part of pytest_flrelia but contract/",
        lambda m: _within(m, RUNTIME),
        lambda i: (
            _top(i.module) in PYTEST_MODULES
            or (_top(i.module) == PLUGIN and not _within(i.module, f"{PLUGIN}.contract"))
        ),
    ),
    Rule(
        "judge-knows-no-target",
        "judge/ never imports reference_impl nor targets/",
        lambda m: _within(m, f"{PLUGIN}.judge"),
        lambda i: _within(i.module, RUNTIME, f"{PLUGIN}.targets"),
    ),
    Rule(
        "scenario-language-imports-no-runtime",
        "scenario/ never imports reference_impl, judge/, harness/ nor plugin/",
        lambda m: _within(m, f"{PLUGIN}.scenario"),
        lambda i: _within(
            i.module, RUNTIME, f"{PLUGIN}.judge", f"{PLUGIN}.harness", f"{PLUGIN}.plugin"
        ),
    ),
    Rule(
        "harness-and-plugin-reach-the-runtime-through-targets",
        "harness/ and plugin/ never import reference_impl directly (only through targets/)",
        lambda m: _within(m, f"{PLUGIN}.harness", f"{PLUGIN}.plugin"),
        lambda i: _within(i.module, RUNTIME),
    ),
    Rule(
        "only-the-reference-target-and-tools-import-the-runtime",
        "in pytest_flrelia only targets/reference/ and tools/ may import reference_impl",
        lambda m: (
            _within(m, PLUGIN) and not _within(m, f"{PLUGIN}.targets.reference", f"{PLUGIN}.tools")
        ),
        lambda i: _within(i.module, RUNTIME),
    ),
    Rule(
        "explore-sits-below-the-plugin",
        "explore/ never imports plugin/ (the plugin imports it), and nothing of "
        "contract/, scenario/, judge/, harness/ nor targets/ imports explore/",
        lambda m: _within(m, PLUGIN),
        lambda i: (
            _within(i.importer, f"{PLUGIN}.explore") and _within(i.module, f"{PLUGIN}.plugin")
        )
        or (
            _within(
                i.importer,
                f"{PLUGIN}.contract",
                f"{PLUGIN}.scenario",
                f"{PLUGIN}.judge",
                f"{PLUGIN}.harness",
                f"{PLUGIN}.targets",
            )
            and _within(i.module, f"{PLUGIN}.explore")
        ),
    ),
    Rule(
        "errors-import-nothing-of-the-plugin",
        "errors.py imports nothing of pytest_flrelia at runtime (type-checking imports only), "
        "so every layer can raise its errors",
        lambda m: m == f"{PLUGIN}.errors",
        lambda i: not i.type_only and _top(i.module) in (PLUGIN, RUNTIME),
    ),
)


def module_name(root: Path, path: Path) -> str:
    """``root/pytest_flrelia/scenario/loader.py`` -> ``pytest_flrelia.scenario.loader``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines of statements inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        test = node.test
        name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
        if name != "TYPE_CHECKING":
            continue
        for stmt in node.body:
            for inner in ast.walk(stmt):
                if hasattr(inner, "lineno"):
                    lines.add(inner.lineno)
    return lines


def read_imports(root: Path, path: Path, modules: set[str]) -> Iterator[Import]:
    """Every import in the file at ``path``, at any depth, relative ones resolved."""
    importer = module_name(root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = _type_checking_lines(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, path, node.lineno, node.lineno in type_only)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = importer.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in modules else base
                yield Import(importer, target, path, node.lineno, node.lineno in type_only)


def violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``file:line: imports X: rule: text`` for each import that breaks a rule."""
    files = sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))
    modules = {module_name(root, p) for p in files}
    found: list[str] = []
    for path in files:
        for imp in read_imports(root, path, modules):
            for rule in RULES:
                if rule.applies(imp.importer) and rule.forbids(imp):
                    where = f"{imp.path.relative_to(root)}:{imp.line}"
                    line = f"{where}: imports {imp.module}: {rule.name}: {rule.text}"
                    if line not in found:  # ``from m import a, b``: one import of m
                        found.append(line)
    return found


def test_the_packages_keep_the_dependency_rules() -> None:
    found = violations(ROOT)
    assert not found, "dependency rules broken (docs/architecture.md):\n" + "\n".join(found)


def test_the_checker_reads_both_packages_whole() -> None:
    """A checker that reads nothing passes everything: it sees every module, and a lot
    of imports, including the function-level and type-checking ones."""
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    modules = {module_name(ROOT, p) for p in files}
    assert {"pytest_flrelia.scenario.loader", "reference_impl.download"} <= modules
    imports = [imp for path in files for imp in read_imports(ROOT, path, modules)]
    lazy = Import(
        "pytest_flrelia.targets",
        "pytest_flrelia.targets.reference",
        ROOT / "pytest_flrelia" / "targets" / "__init__.py",
        0,
        False,
    )
    assert any(
        (i.importer, i.module, i.type_only) == (lazy.importer, lazy.module, False) for i in imports
    ), "the function-level import in targets/__init__.py was not read"
    assert any(i.importer == "pytest_flrelia.errors" and i.type_only for i in imports)
    assert len(imports) > 300


# --- exceptions have one home -------------------------------------------------------

ERROR_HOME = f"{PLUGIN}.errors"
OWN_ERRORS = (f"{PLUGIN}.contract",)
"""Contract errors stay in the contract, which imports nothing outside itself."""


def _is_exception_base(base: ast.expr, known: set[str]) -> bool:
    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
    return name.endswith(("Error", "Exception", "Warning")) or name in known


def stray_exceptions(root: Path) -> list[str]:
    """``file:line: class X`` for each exception class of the plugin defined outside
    errors.py (and outside contract/); a subclass of one is found by its base's name."""
    files = sorted((root / PLUGIN).rglob("*.py"))
    known: set[str] = set()
    classes: list[tuple[Path, ast.ClassDef]] = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.append((path, node))
    changed = True
    while changed:  # exception classes of the tree, by name, to a fixed point
        changed = False
        for _, node in classes:
            if node.name not in known and any(_is_exception_base(b, known) for b in node.bases):
                known.add(node.name)
                changed = True
    return [
        f"{path.relative_to(root)}:{node.lineno}: class {node.name}"
        for path, node in classes
        if node.name in known
        and module_name(root, path) != ERROR_HOME
        and not _within(module_name(root, path), *OWN_ERRORS)
    ]


def test_the_plugin_defines_its_exceptions_in_errors_py() -> None:
    found = stray_exceptions(ROOT)
    assert not found, "exceptions outside pytest_flrelia/errors.py:\n" + "\n".join(found)


def test_the_old_import_paths_name_the_same_classes() -> None:
    """Re-exports, not copies: ``except loader.ScenarioError`` catches what errors.py raises."""
    from pytest_flrelia import errors  # noqa: PLC0415
    from pytest_flrelia.harness import runner  # noqa: PLC0415
    from pytest_flrelia.plugin import fixture  # noqa: PLC0415
    from pytest_flrelia.scenario import catalog, loader  # noqa: PLC0415

    assert loader.ScenarioError is errors.ScenarioError
    assert loader.ScenarioTimeoutWarning is errors.ScenarioTimeoutWarning
    assert catalog.ParamError is errors.ParamError
    assert runner.ScenarioFailure is errors.ScenarioFailure
    assert runner.ScenarioCut is errors.ScenarioCut
    assert runner.HarnessError is errors.HarnessError
    assert fixture.RunSpecError is errors.RunSpecError
    for name in errors.__all__:
        assert getattr(errors, name).__module__ == ERROR_HOME, name


def test_the_stray_exception_check_can_fail(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pytest_flrelia/errors.py": "class ScenarioFailure(Exception):\n    pass\n",
            "pytest_flrelia/contract/units.py": "class UnitError(ValueError):\n    pass\n",
            "pytest_flrelia/harness/runner.py": "import errors\n\n"
            "class Cut(errors.ScenarioFailure):\n    pass\n",
            "pytest_flrelia/targets/__init__.py": "class Gone(LookupError):\n    pass\n"
            "class Plain:\n    pass\n",
        },
    )
    assert stray_exceptions(root) == [
        "pytest_flrelia/harness/runner.py:3: class Cut",
        "pytest_flrelia/targets/__init__.py:1: class Gone",
    ]


# --- what an interpreter really loads ------------------------------------------------

LOADED = """
import importlib, json, pkgutil, sys
for package in sys.argv[1:]:
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN_AT_RUNTIME: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # (package imported whole, forbidden module families, allowed inside a forbidden one)
    ("pytest_flrelia.contract", (*PYTEST_MODULES, RUNTIME, PLUGIN), (f"{PLUGIN}.contract",)),
    (RUNTIME, (*PYTEST_MODULES, PLUGIN), (f"{PLUGIN}.contract",)),
    (
        "pytest_flrelia.scenario",
        (RUNTIME, f"{PLUGIN}.judge", f"{PLUGIN}.harness", f"{PLUGIN}.plugin", f"{PLUGIN}.targets"),
        (),
    ),
    ("pytest_flrelia.judge", (RUNTIME, f"{PLUGIN}.targets"), ()),
    # The explorer reaches the runtime through targets only when it runs a schedule.
    ("pytest_flrelia.explore", (RUNTIME, f"{PLUGIN}.plugin"), ()),
]


@pytest.mark.parametrize(
    ("package", "forbidden", "allowed"),
    FORBIDDEN_AT_RUNTIME,
    ids=[package for package, _, _ in FORBIDDEN_AT_RUNTIME],
)
def test_importing_a_layer_loads_nothing_it_must_not_know(
    package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]
) -> None:
    """Transitively, in a fresh interpreter: what the static rules cannot see (an import
    made from a string, a chain through a module no rule covers) shows up here."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, package],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    assert any(_within(m, package) for m in loaded)
    bad = [m for m in loaded if _within(m, *forbidden) and not _within(m, *allowed) and m != PLUGIN]
    assert not bad, f"importing {package} loads {bad}"


# --- the checker on synthetic packages ---------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("")
        path.write_text(textwrap.dedent(text))
    return root


CLEAN = {
    "pytest_flrelia/contract/timeline.py": "import json\nimport numpy\n",
    "pytest_flrelia/contract/faults.py": "from pytest_flrelia.contract.timeline import x\n"
    "from . import timeline\n",
    "pytest_flrelia/errors.py": "from typing import TYPE_CHECKING\nimport pytest\n"
    "if TYPE_CHECKING:\n    from pytest_flrelia.harness.runner import Outcome\n",
    "pytest_flrelia/scenario/loader.py": "from pytest_flrelia.contract import faults\n"
    "from pytest_flrelia.errors import ScenarioError\nfrom .catalog import CATALOG\n",
    "pytest_flrelia/scenario/catalog.py": "import pytest\n",
    "pytest_flrelia/judge/invariants.py": "from pytest_flrelia.contract import target\n",
    "pytest_flrelia/harness/runner.py": "from pytest_flrelia.targets import load_target\n"
    "from pytest_flrelia.judge import invariants\n",
    "pytest_flrelia/targets/reference/__init__.py": "from reference_impl.job import run_job\n",
    "pytest_flrelia/tools/zoo.py": "import reference_impl.job\n",
    "pytest_flrelia/explore/api.py": "from pytest_flrelia.harness import runner\n"
    "from pytest_flrelia.scenario import loader\n",
    "pytest_flrelia/plugin/explore_items.py": "from pytest_flrelia.explore import api\n",
    "reference_impl/job.py": "import numpy\nfrom pytest_flrelia.contract.timeline import x\n"
    "from . import download\n",
    "reference_impl/download.py": "from pytest_flrelia.contract.faults import LAST_CHUNK\n",
}

BROKEN: list[tuple[str, str, str, int]] = [
    # (file, source, rule, line)
    ("pytest_flrelia/contract/units.py", "import pytest\n", "contract-is-self-contained", 1),
    (
        "pytest_flrelia/contract/units.py",
        "def f():\n    from pytest_flrelia.scenario import catalog\n",
        "contract-is-self-contained",
        2,
    ),
    (
        "pytest_flrelia/contract/units.py",
        "from ..judge import invariants\n",
        "contract-is-self-contained",
        1,
    ),
    (
        "reference_impl/agent.py",
        "import json\nfrom pytest_flrelia.judge import invariants\n",
        "runtime-knows-only-the-contract",
        2,
    ),
    ("reference_impl/agent.py", "import _pytest.config\n", "runtime-knows-only-the-contract", 1),
    (
        "reference_impl/agent.py",
        "from pytest_flrelia import errors\n",
        "runtime-knows-only-the-contract",
        1,
    ),
    (
        "pytest_flrelia/judge/invariants.py",
        "def oracle():\n    from reference_impl.server import initial_model\n",
        "judge-knows-no-target",
        2,
    ),
    (
        "pytest_flrelia/judge/report.py",
        "from pytest_flrelia.targets.reference import faults\n",
        "judge-knows-no-target",
        1,
    ),
    (
        "pytest_flrelia/scenario/schema.py",
        "from reference_impl.download import LAST_CHUNK\n",
        "scenario-language-imports-no-runtime",
        1,
    ),
    (
        "pytest_flrelia/scenario/schema.py",
        "from pytest_flrelia import harness\n",
        "scenario-language-imports-no-runtime",
        1,
    ),
    (
        "pytest_flrelia/scenario/schema.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..plugin import x\n",
        "scenario-language-imports-no-runtime",
        3,
    ),
    (
        "pytest_flrelia/harness/processes.py",
        "from reference_impl.process_stop import wait_gone\n",
        "harness-and-plugin-reach-the-runtime-through-targets",
        1,
    ),
    (
        "pytest_flrelia/plugin/__init__.py",
        "import reference_impl\n",
        "harness-and-plugin-reach-the-runtime-through-targets",
        1,
    ),
    (
        "pytest_flrelia/targets/__init__.py",
        "import reference_impl.job as job\n",
        "only-the-reference-target-and-tools-import-the-runtime",
        1,
    ),
    (
        "pytest_flrelia/explore/api.py",
        "from pytest_flrelia.plugin import collect\n",
        "explore-sits-below-the-plugin",
        1,
    ),
    (
        "pytest_flrelia/harness/runner.py",
        "import json\nfrom pytest_flrelia.explore import api\n",
        "explore-sits-below-the-plugin",
        2,
    ),
    (
        "pytest_flrelia/errors.py",
        "from pytest_flrelia.judge.invariants import Verdict\n",
        "errors-import-nothing-of-the-plugin",
        1,
    ),
]


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert violations(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("relative", "source", "rule", "line"),
    BROKEN,
    ids=[f"{rule}:{relative}:{line}" for relative, _, rule, line in BROKEN],
)
def test_the_checker_names_file_line_and_rule(
    tmp_path: Path, relative: str, source: str, rule: str, line: int
) -> None:
    root = _tree(tmp_path, {**CLEAN, relative: source})
    found = violations(root)
    assert any(v.startswith(f"{relative}:{line}: ") and f": {rule}: " in v for v in found), found
    assert all(v.startswith(f"{relative}:") for v in found), found


def test_the_rules_are_the_documented_ones() -> None:
    """docs/architecture.md states each rule the test enforces, by name."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [rule.name for rule in RULES if f"`{rule.name}`" not in text]
    assert not missing, f"rules not stated in docs/architecture.md: {missing}"


def test_every_module_has_a_row_in_the_architecture_tables() -> None:
    """The module tables of docs/architecture.md list the layout as it is: one row
    per file of both packages, named by its path."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    rows = [f"| `{path.relative_to(ROOT).as_posix()}` |" for path in files]
    missing = [row for row in rows if row not in text]
    assert not missing, "modules without a row in docs/architecture.md:\n" + "\n".join(missing)


if __name__ == "__main__":  # pragma: no cover - a quick listing for humans
    print("\n".join(violations(ROOT)) or "no violations", file=sys.stderr)

"""The install layout: `pip install keras-inception` brings Keras and NumPy only; the
`training` extra brings every third-party package that `training/` imports."""

import ast
import importlib.metadata
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DIST = "keras-inception"


def _requirements() -> dict[str | None, set[str]]:
    """Requirement names by extra (None: the base install), from the installed metadata."""
    by_extra: dict[str | None, set[str]] = {}
    for line in importlib.metadata.requires(DIST) or []:
        name = re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower().replace("_", "-")
        extra = re.search(r'extra\s*==\s*"([^"]+)"', line)
        by_extra.setdefault(extra.group(1) if extra else None, set()).add(name)
    return by_extra


# The deployment runtimes (the `deploy` extra) are imported by training/runtimes.py when
# their format is used, so that `import training` works without them.
DEPLOY_MODULE = ROOT / "training" / "runtimes.py"


def _third_party_imports(
    folder: pathlib.Path, *, module_level: bool = False, exclude: pathlib.Path | None = None
) -> set[str]:
    """Third-party top-level names imported by the modules of `folder` (a folder and its
    subpackages, or one file), but `exclude`; `module_level`: only the imports run when a
    module is imported, not the optional ones inside functions."""
    names = set()
    for path in [folder] if folder.is_file() else folder.rglob("*.py"):
        if path == exclude:
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body if module_level else ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    own = {"keras_inception", "training", "benchmarks", "__future__"}
    return {n for n in names if n not in own and n not in sys.stdlib_module_names}


def test_the_base_install_is_keras_and_numpy():
    assert _requirements()[None] == {"keras", "numpy"}


def test_the_model_package_imports_only_what_the_base_install_brings():
    imported = _third_party_imports(ROOT / "keras_inception", module_level=True)
    assert imported <= {"keras", "numpy"}


@pytest.mark.parametrize("folder", ["training"])
def test_the_training_extra_covers_every_import_of_training(folder):
    distributions = importlib.metadata.packages_distributions()
    requirements = _requirements()
    installed = requirements[None] | requirements["training"]
    missing = {}
    for module in sorted(_third_party_imports(ROOT / folder, exclude=DEPLOY_MODULE)):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & installed:
            missing[module] = sorted(names)
    assert not missing, f"imported by {folder}/ but in no requirement: {missing}"
    assert {"tensorflow", "tensorflow-datasets", "keras-tuner", "matplotlib"} <= installed


def test_the_deploy_extra_covers_every_runtime():
    distributions = importlib.metadata.packages_distributions()
    requirements = _requirements()
    installed = requirements[None] | requirements["training"] | requirements["deploy"]
    imported = _third_party_imports(DEPLOY_MODULE)
    assert {"onnxruntime", "openvino", "ai_edge_litert"} <= imported
    for module in imported:
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        assert names & installed, f"{module} is imported by {DEPLOY_MODULE.name}, in no extra"
    # Keras's ONNX export on TensorFlow needs tf2onnx, which it imports itself.
    assert "tf2onnx" in requirements["deploy"]


def _training_modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted((ROOT / "training").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = ast.parse(path.read_text())
    return modules


# The deliberate exceptions: quiet.py imports TensorFlow inside its stderr filter, so
# that the CUDA-probe lines of TensorFlow's first import can be dropped; runtimes.py
# imports a deployment runtime (the `deploy` extra) when its format is used.
LATE_IMPORTS = {"training.quiet", "training.runtimes"}


def test_training_imports_only_at_module_level():
    """Function-local imports hid an import cycle once; every import runs at import time."""
    nested = []
    for name, tree in _training_modules().items():
        if name in LATE_IMPORTS:
            continue
        top = {id(node) for node in tree.body}
        # `if TYPE_CHECKING:` imports never run, so they cannot hide a cycle.
        typing_only = {
            id(inner)
            for node in tree.body
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top:
                nested.append(f"{name}:{node.lineno}")
    assert not nested


def test_training_has_no_import_cycle():
    modules = _training_modules()
    graph = {}
    for name, tree in modules.items():
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "training":
                deps |= {f"training.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training."):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("training.")}
        graph[name] = deps & set(modules)
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError(f"import cycle: {' -> '.join([*path, name])}")
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])
    assert "training.multiworker" in graph["training.train"]  # the walk saw the drivers

"""The package's imports go down only: maths <- networks/envs <- actor/learner <- runtime/trainer <- binaries and
reports. Every import counts, including the ones inside functions (a deferred import is still a dependency)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "impala_tf"

# Lowest first. A module may import its own layer and the ones below it. `envs`, `runtime`, `report` and `interop`
# stand for every module of those packages.
LAYERS = (
    # Maths, reference data and plain utilities: nothing here knows an agent or an environment.
    {
        "impala_tf",
        "vtrace",
        "losses",
        "popart",
        "scoring",
        "reference",
        "unroll",
        "compiled",
        "writers",
        "cli",
    },
    # What the agent sees and is: environments, the suites that list them, networks.
    {"envs", "suites", "networks"},
    # One actor, one learner, and what they share.
    {"actor", "learner", "replay", "checkpoints", "agent"},
    # Running them: flags, runtimes, the trainer, run directories, evaluation and export.
    {"config", "runtime", "monitor", "rundir", "trainer", "evaluate", "export", "pbt_scheduler"},
    # Binaries and reports.
    {"leaderboard", "verdict", "transfer", "pbt", "report", "interop"},
)
# Top-level folders beside the package: they use it, never the other way round.
OUTSIDE = {"suites", "experiments", "bench", "tests", "leaderboards"}


def unit(module: str) -> str:
    """`impala_tf.envs.atari` -> "envs"; `impala_tf` -> "impala_tf"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit(module) in layer)


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions; `from impala_tf import x` names
    impala_tf.x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "impala_tf":
                found |= {f"impala_tf.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


def test_every_package_module_has_a_layer():
    unplaced = sorted(m for m in package_modules() if not any(unit(m) in layer for layer in LAYERS))
    assert not unplaced, f"place these modules in a layer of tests/test_layers.py: {unplaced}"


def test_package_modules_import_only_their_own_or_lower_layers():
    upward = []
    for module, path in sorted(package_modules().items()):
        for imported in sorted(imports_of(path)):
            if imported.split(".")[0] == "impala_tf" and layer_of(imported) > layer_of(module):
                upward.append(
                    f"{module} (layer {layer_of(module)}) imports {imported} (layer {layer_of(imported)})"
                )
    assert not upward, "\n".join(upward)


def test_package_never_imports_the_folders_that_use_it():
    wrong = [
        f"{module} imports {imported}"
        for module, path in sorted(package_modules().items())
        for imported in sorted(imports_of(path))
        if imported.split(".")[0] in OUTSIDE
    ]
    assert not wrong, "\n".join(wrong)


def test_layer_check_sees_an_upward_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from impala_tf import trainer\n    return trainer\n")
    assert "impala_tf.trainer" in imports_of(source)
    assert layer_of("impala_tf.trainer") > layer_of("impala_tf.agent")

"""The package's layering: imports flow one way, shared < data < train < export < infer < report < pipeline/cli."""

import ast
from pathlib import Path

import fastseg

ROOT = Path(fastseg.__file__).parent
# the top: the pipeline, the command line and what renders it (clidoc); any other top-level module is shared (0)
ORDER = {"data": 1, "train": 2, "export": 3, "infer": 4, "report": 5, "pipeline": 6, "cli": 6, "__main__": 6, "clidoc": 6}
EXEMPT = {"fastseg/__init__.py", "fastseg/_compat.py"}  # lazy name tables and old-path aliases name every stage


def stage(module: str) -> int | None:
    """The rank of a ``fastseg`` module (0: a shared top-level module); None for the package itself or others."""
    parts = module.split(".")
    if parts[0] != "fastseg" or len(parts) < 2:
        return None
    return ORDER.get(parts[1], 0)


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, at any depth (functions' lazy imports too)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from .. import x` names a module when x is one: count it as importing fastseg.x
            out += [(node.lineno, f"{base}.{a.name}" if base == "fastseg" else base) for a in node.names]
    return out


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        if rel in EXEMPT:
            continue
        mine = stage(module_name(path, root))
        for line, target in imported(path, root):
            theirs = stage(target)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{rel}:{line} imports {target}")
    return sorted(set(found))


def test_no_stage_imports_a_later_stage():
    assert violations() == []


def test_the_check_sees_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "fastseg"
    (pkg / "export").mkdir(parents=True)
    (pkg / "export" / "x.py").write_text("def f():\n    from ..infer.predictor import load\n")
    (pkg / "infer").mkdir()
    (pkg / "infer" / "y.py").write_text("from ..export import x\nfrom fastseg.report import plots\n")
    (pkg / "config.py").write_text("from . import errors\nfrom .data import images\n")
    assert violations(pkg) == ["fastseg/config.py:2 imports fastseg.data",
                               "fastseg/export/x.py:2 imports fastseg.infer.predictor",
                               "fastseg/infer/y.py:2 imports fastseg.report"]

"""House rule: functions stay short and take few parameters, or their docstring says why not.

A function over ``MAX_LINES`` lines needs a docstring line starting with ``Long:``; one over ``MAX_PARAMS``
parameters (``self``/``cls`` not counted, ``*args``/``**kwargs`` counted once each) a line starting with
``Many parameters:``; each followed by the reason.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

MAX_LINES = 55  # the rule says ~50; a few lines of slack for a long signature or docstring
MAX_PARAMS = 7  # the rule says ~6
PACKAGE = Path(__file__).resolve().parents[1] / "fastseg"


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return names[1:] if names and names[0] in ("self", "cls") else names


def _has_reason(fn, label: str) -> bool:
    doc = ast.get_docstring(fn) or ""
    return any(line.strip().startswith(label) and line.strip()[len(label):].strip() for line in doc.splitlines())


def oversized(source: str, where: str = "<string>") -> list[str]:
    """``where:line name: why`` for each function of ``source`` over the limits without its reason."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        lines, params = fn.end_lineno - fn.lineno + 1, len(_params(fn))
        if lines > MAX_LINES and not _has_reason(fn, "Long:"):
            found.append(f"{where}:{fn.lineno} {fn.name}: {lines} lines (split it, or say why in a 'Long:' line)")
        if params > MAX_PARAMS and not _has_reason(fn, "Many parameters:"):
            found.append(f"{where}:{fn.lineno} {fn.name}: {params} parameters (a data type, or say why in a "
                         "'Many parameters:' line)")
    return found


def test_no_function_is_too_long_or_takes_too_many_parameters_without_a_reason():
    found = [f for path in sorted(PACKAGE.rglob("*.py"))
             for f in oversized(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "\n".join(found)


def test_the_scan_flags_oversized_functions_and_accepts_a_stated_reason():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    long_fn = f"def f():\n{body}\n"
    many = "class C:\n    def m(self, a, b, c, d, e, f, g, *rest):\n        pass\n"
    assert [m.split(": ", 1)[1] for m in oversized(long_fn + many)] == [
        f"{MAX_LINES + 1} lines (split it, or say why in a 'Long:' line)",
        "8 parameters (a data type, or say why in a 'Many parameters:' line)"]
    assert oversized(f'def f():\n    """Does a lot.\n\n    Long: one table, row by row."""\n{body}\n') == []
    assert oversized(textwrap.dedent('''
        def g(a, b, c, d, e, f, g, h):
            """Many parameters: the CLI's options one to one."""
        def h(a, b, c, d, e, f, g, h):
            """Many parameters:"""
        ''')) == ["<string>:4 h: 8 parameters (a data type, or say why in a 'Many parameters:' line)"]
    assert oversized("def m(self, a, b, c, d, e, f, g):\n    pass\n") == []  # self is not counted

"""No default caller: no function of ``inferd`` takes a ``Principal`` it can leave out.

A caller left out must be an error (a missing argument), never a silent admin; the one
principal without a key that may act, ``OPEN_MODE``, is handed over on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import inferd

SRC = Path(inferd.__file__).parent


def _mentions_principal(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    return any((isinstance(node, ast.Name) and node.id == "Principal")
               or (isinstance(node, ast.Attribute) and node.attr == "Principal")
               for node in ast.walk(annotation))


def defaulted_principals(source: str, filename: str) -> list[str]:
    """``file:line function(parameter)`` for each parameter typed with ``Principal`` (alone,
    optional or in a union) that has a default."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        with_defaults = list(zip(positional[len(positional) - len(args.defaults):],
                                 args.defaults, strict=True))
        with_defaults += [(arg, default) for arg, default
                          in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                          if default is not None]
        name = getattr(node, "name", "<lambda>")
        found += [f"{filename}:{arg.lineno} {name}({arg.arg})" for arg, _ in with_defaults
                  if _mentions_principal(arg.annotation)]
    return found


def test_no_function_of_inferd_has_a_default_principal() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += defaulted_principals(path.read_text(), str(path.relative_to(SRC)))
    assert found == [], "parameters typed Principal with a default: " + ", ".join(found)


def test_the_scan_finds_every_form_of_default() -> None:
    source = '''
def a(p: Principal = OPEN_MODE) -> None: ...
async def b(x: int, p: Principal | None = None) -> None: ...
def c(*, p: "Principal" = X) -> None: ...
def d(p: principal.Principal = X, q: int = 0) -> None: ...
def e(p: Principal, q: int = 0) -> None: ...
def f(*, p: Principal, q: int = 0) -> None: ...
'''
    assert [hit.split(" ")[1] for hit in defaulted_principals(source, "x.py")] == [
        "a(p)", "b(p)", "c(p)", "d(p)"]

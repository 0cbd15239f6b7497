"""No module-level mutable state in ``inferd``, and no object finished after construction.

A process's state lives in the objects its composition root builds (``inferd.services``,
``inferd.jobs.cluster``, ``inferd.roles``, the CLI's role starters) and hands to what uses
them; a module-level dict or singleton would be shared by every app of a process (the tests
run many) and changed behind the constructors' backs. The scan (AST, no import) refuses:

- a module-level dict, list or set (display, comprehension or ``dict()``...) that is mutated
  anywhere in the package, or whose name is not an UPPER_CASE constant;
- a module-level instance of a class of ``inferd`` that is not frozen (a singleton), or of a
  stateful standard type (locks, queues, counters);
- ``global`` statements, and ``functools.cache``/``lru_cache`` on module-level functions;
- in the composition roots, an attribute set on an object after it was built.

What must stay is in ``ALLOWED`` with the reason, and the reason is a comment at the spot.
"""

from __future__ import annotations

import ast
from pathlib import Path

import inferd

SRC = Path(inferd.__file__).parent

# "<path relative to src/inferd>:<name>" -> why it may stay.
ALLOWED: dict[str, str] = {
    "http/operation.py:REGISTRY": "the route declarations, filled once at import by @endpoint "
    "(as the APIRouters are) and only read after",
    "engines/llamacpp/backends.py:_lock": "guards the one-time registration of llama.cpp's "
    "backends, which are process-global native state",
    "store/usage.py:_INSERTS": "the compiled insert per dialect: a cache of immutable strings",
    "routing/affinity.py:_id_hash": "a bounded memo (4,096) of a pure function of a replica "
                                    "id, the same for every router",
    "store/usage.py:_SQLITE_ROWS": "the SQLite multi-row insert per row count: a cache of "
                                   "immutable strings",
}

# The modules that build a process's parts: no attribute set on what they built.
COMPOSITION_ROOTS = ("services.py", "jobs/cluster.py", "roles.py", "app.py", "cli.py")
# Attributes the framework's own API has set this way.
FRAMEWORK_ATTRIBUTES = frozenset({"app.state.services"})

CONTAINER_CALLS = frozenset(
    {
        "dict",
        "list",
        "set",
        "defaultdict",
        "OrderedDict",
        "deque",
        "Counter",
        "bytearray",
        "WeakSet",
        "WeakKeyDictionary",
        "WeakValueDictionary",
        "ChainMap",
    }
)
STATEFUL_CALLS = frozenset(
    {
        "count",
        "Lock",
        "RLock",
        "Event",
        "Condition",
        "Semaphore",
        "BoundedSemaphore",
        "Queue",
        "LifoQueue",
        "PriorityQueue",
        "SimpleQueue",
        "local",
        "cycle",
    }
)
MUTATORS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "remove",
        "pop",
        "popitem",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "sort",
        "reverse",
        "__setitem__",
        "__delitem__",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    }
)
CACHES = frozenset({"cache", "lru_cache"})


def _callee(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _is_container(value: ast.expr) -> bool:
    return isinstance(
        value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
    ) or (isinstance(value, ast.Call) and _callee(value.func) in CONTAINER_CALLS)


def _frozen(node: ast.ClassDef) -> bool:
    """A frozen dataclass, a NamedTuple, an Enum or an exception: safe to share."""
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and any(
            k.arg == "frozen" and isinstance(k.value, ast.Constant) and k.value.value
            for k in decorator.keywords
        ):
            return True
    bases = {_callee(b) for b in node.bases}
    return bool(bases & {"NamedTuple", "Enum", "StrEnum", "IntEnum", "Exception"}) or any(
        b.endswith("Error") for b in bases
    )


def _module_assignments(tree: ast.Module) -> list[tuple[str, ast.expr, int]]:
    """``(name, value, line)`` of the module's own assignments (also under if/try)."""
    found: list[tuple[str, ast.expr, int]] = []
    body = list(tree.body)
    while body:
        node = body.pop(0)
        if isinstance(node, (ast.If, ast.Try)):
            body += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
            for handler in getattr(node, "handlers", []):
                body += handler.body
        elif isinstance(node, ast.Assign) and node.value is not None:
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        found.append((name.id, node.value, node.lineno))
        elif (
            isinstance(node, ast.AnnAssign)
            and node.value is not None
            and isinstance(node.target, ast.Name)
        ):
            found.append((node.target.id, node.value, node.lineno))
    return found


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def mutated_names(tree: ast.AST) -> set[str]:
    """Names whose object a statement changes: ``X[k] = v``, ``X.a = v``, ``del X[k]``,
    ``X += ...`` on an item, ``X.append(...)`` and the other mutating methods."""
    names: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            if isinstance(target, (ast.Subscript, ast.Attribute)):
                root = _root_name(target)
                if root is not None and root not in ("self", "cls"):
                    names.add(root)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
        ):
            root = _root_name(node.func.value)
            if root is not None:
                names.add(root)
    return names


def module_state(sources: dict[str, str]) -> list[str]:
    """``path:line name (why)`` for every piece of module-level mutable state in
    ``sources`` (relative path -> source) that ``ALLOWED`` does not name."""
    trees = {path: ast.parse(source, path) for path, source in sources.items()}
    unfrozen = {
        node.name
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and not _frozen(node)
    }
    mutated: set[str] = set()
    for tree in trees.values():
        mutated |= mutated_names(tree)
    found = []
    for path, tree in trees.items():
        for name, value, line in _module_assignments(tree):
            why = None
            if _is_container(value):
                if name in mutated:
                    why = "a module-level container changed at run time"
                elif not (name.isupper() or name.startswith("__")):
                    why = "a module-level container that is not an UPPER_CASE constant"
            elif isinstance(value, ast.Call):
                callee = _callee(value.func)
                if callee in unfrozen:
                    why = f"a module-level {callee} (a singleton)"
                elif callee in STATEFUL_CALLS:
                    why = f"a module-level {callee}()"
            if why is not None and f"{path}:{name}" not in ALLOWED:
                found.append(f"{path}:{line} {name} ({why})")
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found += [
                    f"{path}:{node.lineno} {name} (global statement)"
                    for name in node.names
                    if f"{path}:{name}" not in ALLOWED
                ]
        for node in tree.body:
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and any(
                    _callee(d.func if isinstance(d, ast.Call) else d) in CACHES
                    for d in node.decorator_list
                )
                and f"{path}:{node.name}" not in ALLOWED
            ):
                found.append(f"{path}:{node.lineno} {node.name} (a module-level cache)")
    return sorted(found)


def attributes_set_after_construction(source: str, path: str) -> list[str]:
    """``path:line target`` for each ``x.attribute = ...`` on anything but ``self``."""
    found = []
    for node in ast.walk(ast.parse(source, path)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and _root_name(target) not in ("self", "cls")
                and ast.unparse(target) not in FRAMEWORK_ATTRIBUTES
            ):
                found.append(f"{path}:{node.lineno} {ast.unparse(target)}")
    return found


def _sources() -> dict[str, str]:
    return {str(path.relative_to(SRC)): path.read_text() for path in sorted(SRC.rglob("*.py"))}


def test_inferd_holds_no_module_level_mutable_state() -> None:
    found = module_state(_sources())
    assert found == [], (
        "module-level mutable state (build it in a composition root and "
        "pass it in, or add it to ALLOWED with the reason): " + ", ".join(found)
    )


def test_every_allowed_entry_still_exists() -> None:
    sources = _sources()
    for entry in ALLOWED:
        path, name = entry.split(":")
        assert path in sources and name in sources[path], f"stale ALLOWED entry {entry}"


def test_the_composition_roots_set_no_attribute_on_what_they_built() -> None:
    found = []
    for path in COMPOSITION_ROOTS:
        found += attributes_set_after_construction((SRC / path).read_text(), path)
    assert found == [], "pass it to the constructor instead: " + ", ".join(found)


def test_the_scan_finds_every_form_of_module_state() -> None:
    source = """
import itertools, threading
from dataclasses import dataclass
from functools import cache

class Registry: ...

@dataclass(frozen=True)
class Frozen: ...

TABLE = {"a": 1}                   # a constant table: allowed
__all__ = ["x"]                    # allowed
_cache = {}                        # lowercase container
SEEN: set[str] = set()             # mutated below
ITEMS = [i for i in range(3)]      # mutated below
ONE = Registry()                   # a singleton
KEY = Frozen()                     # frozen: allowed
_counter = itertools.count()       # stateful
_lock = threading.Lock()           # stateful
try:
    HIDDEN = []                    # under try, mutated below
except ImportError:
    pass

def f() -> None:
    global TABLE
    SEEN.add("x")
    ITEMS[0] = 2
    HIDDEN.append(1)

@cache
def g() -> int:
    return 1
"""
    found = [line.split(" ", 1)[1] for line in module_state({"m.py": source})]
    names = [entry.split(" ", 1)[0] for entry in found]
    assert sorted(names) == sorted(
        ["_cache", "SEEN", "ITEMS", "ONE", "_counter", "_lock", "HIDDEN", "TABLE", "g"]
    ), found
    assert "TABLE (global statement)" in found


def test_the_attribute_scan_finds_assignments_on_built_objects() -> None:
    source = """
def build(settings):
    service = Service()
    service.only = {"m"}
    queue.on_dead = handler
    self.ok = 1
    app.state.services = service
    a.b.c += 1
"""
    assert attributes_set_after_construction(source, "r.py") == [
        "r.py:4 service.only",
        "r.py:5 queue.on_dead",
        "r.py:8 a.b.c",
    ]

"""Check an uploaded agent file by parsing it; agent code is never imported or run here.

The API never parses on its event loop: ``farm.agents.checker`` runs :func:`main` in a short-lived
child process with a time and memory cap. This module therefore imports only what that child
needs (``ast``, ``json``, ``resource``), keeping its start cheap. Whether the imported modules
exist in the sandbox runtime is decided by the caller (:mod:`farm.sandbox.packages`): the
child runs without ``site``.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import sys
from dataclasses import dataclass

from farm.errors import InvalidInput

_STRATEGY_BASES = {"Strategy", "SignalStrategy"}
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
_PARAM_TYPES = (bool, int, float, str)
TOO_COMPLEX = "the agent file is too complex to parse (nesting too deep or too many statements)"


@dataclass(frozen=True, slots=True)
class CheckedAgent:
    """What parsing an agent file tells: its strategy, the modules it imports, its params."""

    strategy_class: str
    imports: list[str]  # top-level names of unguarded absolute imports, sorted
    params: dict[str, str | None] | None  # declared name -> default's type; None: not literal

    def as_json(self) -> dict[str, object]:
        """The child's reply."""
        return {
            "strategyClass": self.strategy_class,
            "imports": self.imports,
            "params": self.params,
        }


def check_agent_source(data: bytes) -> CheckedAgent:
    """What ``data`` declares, if it defines exactly one concrete Strategy class; raises
    ``InvalidInput`` saying what to fix (empty, not UTF-8, a NUL byte, a syntax error, too
    complex, zero or several concrete strategies)."""
    if not data.strip():
        raise InvalidInput("the agent file is empty")
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the agent file is not UTF-8 text (byte {exc.start})") from None
    nul = source.find("\x00")
    if nul >= 0:
        line = source.count("\n", 0, nul) + 1
        raise InvalidInput(
            f"the agent file contains a NUL byte (line {line}); remove it", line=line
        )
    try:
        tree = ast.parse(source, filename="agent.py")
    except SyntaxError as exc:
        raise InvalidInput(
            f"Python syntax error at line {exc.lineno}, column {exc.offset}: {exc.msg}",
            line=exc.lineno,
            column=exc.offset,
        ) from None
    except (RecursionError, MemoryError):
        raise InvalidInput(TOO_COMPLEX) from None
    classes = strategy_classes(tree)
    if not classes:
        raise InvalidInput(
            "no class deriving from backtrader.Strategy found; "
            "define exactly one, e.g. `class MyAgent(bt.Strategy):`"
        )
    concrete = [c for c in classes if not any(c.name in _base_names(o) for o in classes)]
    if not concrete:  # only when class names are reused
        raise InvalidInput("every Strategy class is another's base; give each a distinct name")
    if len(concrete) > 1:
        raise InvalidInput(
            f"found {len(concrete)} concrete Strategy classes "
            f"({', '.join(c.name for c in concrete)}); an agent file must define exactly one "
            "(a base class of your own that another one derives from is fine)"
        )
    strategy = concrete[0]
    return CheckedAgent(strategy.name, imported_modules(tree), declared_params(strategy, classes))


def main() -> None:
    """The checking child: caps its own memory and CPU (``argv``: bytes, seconds), lowers its
    priority, reads the file from stdin and writes one JSON object:
    ``{"strategyClass", "imports", "params"}`` (:class:`CheckedAgent`) or
    ``{"message", "line"?, "column"?}``."""
    memory, cpu = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    os.nice(10)
    data = sys.stdin.buffer.read()
    try:
        reply = check_agent_source(data).as_json()
    except InvalidInput as exc:
        reply = {"message": exc.message, **exc.extra}
    except MemoryError:  # e.g. while walking a huge tree
        reply = {"message": TOO_COMPLEX}
    sys.stdout.write(json.dumps(reply))


def strategy_classes(tree: ast.Module) -> list[ast.ClassDef]:
    """The module-level classes deriving (directly or via each other) from Strategy."""
    modules, names = _backtrader_aliases(tree)
    found: list[ast.ClassDef] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        known = [c.name for c in found]
        if any(_is_strategy_base(b, modules, names, known) for b in node.bases):
            found.append(node)
    return found


def imported_modules(tree: ast.Module) -> list[str]:
    """Top-level names of the modules imported with absolute imports, except those inside a
    ``try`` that handles ``ImportError`` (an optional dependency), sorted."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar) and any(
            _catches_import_error(h.type) for h in node.handlers
        ):
            guarded.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return sorted(found)


def _catches_import_error(handler: ast.expr | None) -> bool:
    if handler is None:
        return True
    names = handler.elts if isinstance(handler, ast.Tuple) else [handler]
    return any(
        (isinstance(n, ast.Name) and n.id in _IMPORT_ERRORS)
        or (isinstance(n, ast.Attribute) and n.attr in _IMPORT_ERRORS)
        for n in names
    )


def declared_params(
    strategy: ast.ClassDef, classes: list[ast.ClassDef]
) -> dict[str, str | None] | None:
    """The params ``strategy`` declares, with its bases' in this file (Backtrader merges them):
    name -> the type of its literal default (``bool``, ``int``, ``float``, ``str``, ``None``
    for a default of None or one that is not a literal). None if a ``params`` is not a literal
    tuple of ``(name, default)`` pairs or a dict."""
    by_name = {c.name: c for c in classes}
    chain: list[ast.ClassDef] = []
    pending = [strategy]
    while pending:
        node = pending.pop()
        if node in chain:
            continue
        chain.append(node)
        pending.extend(by_name[b] for b in _base_names(node) if b in by_name)
    declared: dict[str, str | None] = {}
    for node in reversed(chain):  # bases first: a subclass's default wins
        value = _params_value(node)
        if value is None:
            continue
        pairs = _param_pairs(value)
        if pairs is None:
            return None
        declared.update(pairs)
    return declared


def _params_value(node: ast.ClassDef) -> ast.expr | None:
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "params" for t in stmt.targets
        ):
            return stmt.value
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "params"
            and stmt.value is not None
        ):
            return stmt.value
    return None


def _param_pairs(value: ast.expr) -> dict[str, str | None] | None:
    items: list[tuple[ast.expr, ast.expr | None]] = []
    if isinstance(value, ast.Dict):
        if any(k is None for k in value.keys):
            return None
        items = [(k, v) for k, v in zip(value.keys, value.values, strict=True) if k is not None]
    elif (
        isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict"
    ):
        if value.args or any(k.arg is None for k in value.keywords):
            return None
        return {str(k.arg): _literal_type(k.value) for k in value.keywords}
    elif isinstance(value, ast.Tuple | ast.List):
        for item in value.elts:
            if not isinstance(item, ast.Tuple | ast.List) or not 1 <= len(item.elts) <= 2:
                return None
            items.append((item.elts[0], item.elts[1] if len(item.elts) == 2 else None))
    else:
        return None
    pairs: dict[str, str | None] = {}
    for key, default in items:
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
            return None
        pairs[key.value] = None if default is None else _literal_type(default)
    return pairs


def _literal_type(node: ast.expr) -> str | None:
    """The type name of a literal default (``-1`` included), None otherwise or for None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in _PARAM_TYPES:
        return type(node.value).__name__
    return None


def _base_names(node: ast.ClassDef) -> list[str]:
    return [b.id for b in node.bases if isinstance(b, ast.Name)]


def _backtrader_aliases(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Local names bound to the backtrader module, and to its Strategy classes."""
    modules: set[str] = set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "backtrader":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module in {
            "backtrader",
            "backtrader.strategy",
        }:
            for alias in node.names:
                if alias.name in _STRATEGY_BASES:
                    names.add(alias.asname or alias.name)
    return modules, names


def _is_strategy_base(base: ast.expr, modules: set[str], names: set[str], found: list[str]) -> bool:
    if isinstance(base, ast.Name):
        return base.id in names or base.id in found
    if isinstance(base, ast.Attribute) and base.attr in _STRATEGY_BASES:
        owner = base.value
        if isinstance(owner, ast.Name):
            return owner.id in modules
        return (
            isinstance(owner, ast.Attribute)
            and owner.attr == "strategy"
            and isinstance(owner.value, ast.Name)
            and owner.value.id in modules
        )
    return False

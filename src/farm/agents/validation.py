"""Check an uploaded agent file by parsing it; agent code is never imported or run here.

The API never parses on its event loop: ``farm.agents.checker`` runs :func:`main` in a short-lived
child process with a time and memory cap. This module therefore imports only what that child
needs (``ast``, ``json``, ``resource``), keeping its start cheap.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import sys

from farm.errors import InvalidInput

_STRATEGY_BASES = {"Strategy", "SignalStrategy"}
TOO_COMPLEX = "the agent file is too complex to parse (nesting too deep or too many statements)"


def check_agent_source(data: bytes) -> str:
    """The name of the one Strategy class ``data`` defines; raises ``InvalidInput`` saying what
    to fix (empty, not UTF-8, a NUL byte, a syntax error, too complex, zero or several classes)."""
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
    if len(classes) > 1:
        raise InvalidInput(
            f"found {len(classes)} Strategy classes ({', '.join(classes)}); an agent file "
            "must define exactly one"
        )
    return classes[0]


def main() -> None:
    """The checking child: caps its own memory and CPU (``argv``: bytes, seconds), lowers its
    priority, reads the file from stdin and writes one JSON object: ``{"strategyClass"}`` or
    ``{"message", "line"?, "column"?}``."""
    memory, cpu = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    os.nice(10)
    data = sys.stdin.buffer.read()
    try:
        reply: dict[str, object] = {"strategyClass": check_agent_source(data)}
    except InvalidInput as exc:
        reply = {"message": exc.message, **exc.extra}
    except MemoryError:  # e.g. while walking a huge tree
        reply = {"message": TOO_COMPLEX}
    sys.stdout.write(json.dumps(reply))


def strategy_classes(tree: ast.Module) -> list[str]:
    """Names of the module-level classes deriving (directly or via each other) from Strategy."""
    modules, names = _backtrader_aliases(tree)
    found: list[str] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        if any(_is_strategy_base(b, modules, names, found) for b in node.bases):
            found.append(node.name)
    return found


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

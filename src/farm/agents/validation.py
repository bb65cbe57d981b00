"""Check an uploaded agent file by parsing it; agent code is never imported or run here."""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass

from farm.errors import InvalidInput

_STRATEGY_BASES = {"Strategy", "SignalStrategy"}


@dataclass(frozen=True, slots=True)
class ValidatedAgent:
    """What validation learned about an agent file."""

    source: str
    strategy_class: str
    sha256: str
    size: int


def validate_agent_file(data: bytes, *, max_bytes: int) -> ValidatedAgent:
    """Validate an agent's bytes; raises ``InvalidInput`` saying what to fix."""
    if not data.strip():
        raise InvalidInput("the agent file is empty")
    if len(data) > max_bytes:
        raise InvalidInput(f"the agent file is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the agent file is not UTF-8 text (byte {exc.start})") from None
    try:
        tree = ast.parse(source, filename="agent.py")
    except SyntaxError as exc:
        raise InvalidInput(
            f"Python syntax error at line {exc.lineno}, column {exc.offset}: {exc.msg}",
            line=exc.lineno,
            column=exc.offset,
        ) from None
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
    return ValidatedAgent(source, classes[0], hashlib.sha256(data).hexdigest(), len(data))


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

"""Agent files are checked by parsing only."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.agents.validation import check_agent_source
from farm.errors import InvalidInput


@pytest.mark.parametrize(
    "source",
    [
        "import backtrader as bt\nclass A(bt.Strategy):\n    pass\n",
        "import backtrader\nclass A(backtrader.Strategy):\n    pass\n",
        "from backtrader import Strategy\nclass A(Strategy):\n    pass\n",
        "from backtrader import Strategy as S\nclass A(S):\n    pass\n",
        "import backtrader as bt\nclass A(bt.strategy.Strategy):\n    pass\n",
        "import backtrader as bt\nclass A(bt.SignalStrategy):\n    pass\n",
    ],
)
def test_accepts_one_strategy_class_however_imported(source: str) -> None:
    assert check_agent_source(source.encode()).strategy_class == "A"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"\xff\xfe not utf8", "not UTF-8"),
        (b"import backtrader\n\x00", "contains a NUL byte (line 2)"),
        (b"x = " + b"a+" * 200_000 + b"a\n", "too complex to parse"),
        (b"import backtrader as bt\nclass A(bt.Strategy:\n", "line 2, column"),
        (b"import backtrader as bt\nclass A(object):\n    pass\n", "no class deriving"),
        (b"class A(Strategy):\n    pass\n", "no class deriving"),
        (
            b"import backtrader as bt\nclass A(bt.Strategy): pass\nclass B(bt.Strategy): pass\n",
            "found 2 concrete Strategy classes (A, B)",
        ),
        (
            b"import backtrader as bt\nclass Base(bt.Strategy): pass\n"
            b"class A(Base): pass\nclass B(Base): pass\n",
            "found 2 concrete Strategy classes (A, B)",
        ),
    ],
)
def test_rejects_with_a_message_that_says_what_to_fix(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_agent_source(data)
    assert fragment in caught.value.message


def test_never_runs_the_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()\nimport backtrader as bt\n"
    with pytest.raises(InvalidInput, match="no class deriving"):
        check_agent_source(source.encode())
    assert not marker.exists()


def test_a_base_class_of_your_own_with_one_concrete_strategy_is_accepted() -> None:
    source = (
        "import backtrader as bt\n"
        "class Base(bt.Strategy):\n    params = (('fast', 10),)\n"
        "class Mid(Base):\n    pass\n"
        "class Agent(Mid):\n    params = dict(slow=30, fast=12)\n"
    )
    checked = check_agent_source(source.encode())
    assert checked.strategy_class == "Agent"
    assert checked.params == {"fast": "int", "slow": "int"}


@pytest.mark.parametrize(
    ("params", "declared"),
    [
        (
            "(('fast', 10), ('ratio', 0.5), ('name', 'x'), ('on', True), ('any', None))",
            {"fast": "int", "ratio": "float", "name": "str", "on": "bool", "any": None},
        ),
        ("{'period': -3, 'k': 2 * 3}", {"period": "int", "k": None}),
        ("(('period',),)", {"period": None}),
        ("make_params()", None),
        ("()", {}),
    ],
)
def test_declared_params_are_parsed_from_literals(
    params: str, declared: dict[str, str | None] | None
) -> None:
    source = f"import backtrader as bt\nclass A(bt.Strategy):\n    params = {params}\n"
    assert check_agent_source(source.encode()).params == declared


def test_imports_are_listed_by_top_level_name_except_optional_ones() -> None:
    source = (
        "import backtrader as bt\nimport numpy.linalg, os.path as p\n"
        "from sklearn.linear_model import Ridge\nfrom . import sibling\n"
        "try:\n    import talib\nexcept ImportError:\n    talib = None\n"
        "def f():\n    from scipy import stats\n"
        "class A(bt.Strategy):\n    pass\n"
    )
    assert check_agent_source(source.encode()).imports == [
        "backtrader",
        "numpy",
        "os",
        "scipy",
        "sklearn",
    ]

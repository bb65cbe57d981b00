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
    assert check_agent_source(source.encode()) == "A"


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
            b"import backtrader as bt\nclass A(bt.Strategy): pass\nclass B(A): pass\n",
            "found 2 Strategy classes (A, B)",
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

"""The committed OpenAPI contract matches the code."""

from __future__ import annotations

import json
from pathlib import Path

from farm.app import create_app
from farm.cli import openapi_json

CONTRACT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def test_committed_contract_matches_the_code() -> None:
    assert CONTRACT.read_text() == openapi_json(create_app), (
        "docs/openapi.json is out of date: run `make openapi` and commit it"
    )


def test_every_operation_documents_its_errors() -> None:
    spec = json.loads(CONTRACT.read_text())
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            assert operation.get("description"), (method, path)
            takes_input = operation.get("parameters") or operation.get("requestBody")
            if path.startswith("/api/") and takes_input:
                codes = set(operation["responses"])
                assert codes & {"400", "401", "404"}, (method, path, codes)
                for code in codes - {"200", "201", "202"}:
                    schema = operation["responses"][code].get("content", {})
                    assert schema, (method, path, code)

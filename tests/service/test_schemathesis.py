"""Property-based run of the served OpenAPI document against the started app (schemathesis, in-process ASGI).

For every operation, schemathesis generates valid and invalid requests from
the document; each answer must be no 5xx and have a documented status, content
type, headers and body schema. The number of examples is bounded so the run
stays under a minute; the seed is fixed so a failure reproduces.

Two exceptions, both by design: operations without any input get no negative
(invalid-input) run, as there is nothing to make invalid; and the /dicomweb
routes may answer their documented 502/503/504, because no PACS runs here
(``pacs_not_configured``) — their statuses, headers and bodies are still checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.main import create_app
from service.openapi import document
from service.settings import Settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 20


DOCUMENT = document()
CASES = [
    pytest.param(mode, method.upper(), path, id=f"{mode}-{method.upper()} {path}")
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in ("positive", "negative")
    if mode == "positive" or operation.get("parameters") or operation.get("requestBody")
]
# Their 5xx answers mean "no PACS here", which is documented (see the module docstring).
WITHOUT_UPSTREAM = ("/dicomweb/",)


@pytest.fixture(scope="module")
def api_schema(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The document the app serves at /openapi.json, bound to that app (schemathesis runs its lifespan)."""
    from schemathesis.python.asgi import shutdown_lifespans

    db = tmp_path_factory.mktemp("schemathesis") / "labels.db"
    app = create_app(Settings(bundle=tiny_bundle, database_url=f"sqlite:///{db}", max_top_k=8))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()


# schemathesis' pytest plugin does not run on pytest 9, so each operation is a
# plain parametrised test driving hypothesis with the operation's strategies.
@pytest.mark.parametrize(("mode", "method", "path"), CASES)
def test_api_answers_as_documented(api_schema: Any, mode: str, method: str, path: str) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    checks = [c for c in CHECKS if not (path.startswith(WITHOUT_UPSTREAM) and c is not_a_server_error)]

    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    def check(case: Any) -> None:
        case.call_and_validate(checks=checks)

    check()

"""Bearer tokens and roles (DEEPMINER_AUTH): 401 vs 403, the recorded annotator, start-up refusals, the CLI."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service import auth
from service.auth import AuthConfigError, Authenticator, Principal, TokenSpec, annotator_for, hash_token
from service.errors import AuthenticationError, PermissionDeniedError
from service.main import create_app
from service.settings import Settings

TOKENS = {
    "reader": "reader-token-0123456789abcdef",
    "annotator": "annotator-token-0123456789abcdef",
    "admin": "admin-token-0123456789abcdef",
}
NAMES = {"reader": "viewer", "annotator": "dr_a", "admin": "lead"}
SPECS = [{"name": NAMES[role], "role": role, "sha256": hash_token(token)} for role, token in TOKENS.items()]
LABEL = {"label": "Spiculated mass margin", "category": "Mass", "cancer_association": "yes"}
ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics")


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def start(tiny_bundle: Path, db: Path, **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings(bundle=tiny_bundle, database_url=f"sqlite:///{db}", **settings))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def writes_client(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """DEEPMINER_AUTH=writes, tokens given inline."""
    yield from start(tiny_bundle, tmp_path_factory.mktemp("db") / "labels.db", auth="writes", tokens=SPECS)


@pytest.fixture(scope="module")
def all_client(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """DEEPMINER_AUTH=all, tokens from a file, as a mounted secret would give them."""
    secrets_dir = tmp_path_factory.mktemp("secrets")
    (secrets_dir / "tokens.json").write_text(json.dumps(SPECS))
    db = tmp_path_factory.mktemp("db") / "labels.db"
    yield from start(tiny_bundle, db, auth="all", tokens_file=secrets_dir / "tokens.json")


# -- the rules, without HTTP ----------------------------------------------------


def test_tokens_are_compared_by_hash_and_roles_are_ordered() -> None:
    authenticator = Authenticator(mode="writes", tokens=[TokenSpec(**s) for s in SPECS])
    assert authenticator.identify(TOKENS["annotator"]) == Principal(name="dr_a", role="annotator")
    with pytest.raises(AuthenticationError):
        authenticator.identify(hash_token(TOKENS["annotator"]))  # the stored hash is not a token
    assert Principal(name="x", role="admin").may("annotator") and not Principal(name="x", role="reader").may(
        "annotator"
    )
    assert authenticator.authorize(None, write=False) is None
    with pytest.raises(AuthenticationError):
        authenticator.authorize(None, write=True)
    with pytest.raises(PermissionDeniedError):
        authenticator.authorize(TOKENS["reader"], write=True)
    assert Authenticator(mode="off").authorize("anything", write=True) is None


def test_token_specs_must_be_unique_and_well_formed() -> None:
    spec = TokenSpec(**SPECS[0])
    with pytest.raises(AuthConfigError, match="names must be unique"):
        Authenticator(mode="writes", tokens=[spec, spec.model_copy(update={"sha256": "1" * 64})])
    with pytest.raises(AuthConfigError, match="sha256s must be unique"):
        Authenticator(mode="writes", tokens=[spec, spec.model_copy(update={"name": "other"})])
    with pytest.raises(AuthConfigError, match="at least one token"):
        Authenticator(mode="all", tokens=[])
    for bad in ({"sha256": "ABC"}, {"role": "owner"}, {"name": " padded "}, {"extra": 1}):
        with pytest.raises(ValidationError):
            TokenSpec(**{**SPECS[0], **bad})


def test_annotator_comes_from_the_token_when_auth_is_on() -> None:
    expert, lead = Principal(name="dr_a", role="annotator"), Principal(name="lead", role="admin")
    assert annotator_for(None, "dr_b") == "dr_b"
    assert annotator_for(expert, None) == "dr_a" and annotator_for(expert, "dr_a") == "dr_a"
    assert annotator_for(lead, "dr_b") == "dr_b"  # an admin may record a label on an expert's behalf
    from annotations import AnnotationValidationError

    with pytest.raises(AnnotationValidationError) as mismatch:
        annotator_for(expert, "dr_b", field="annotations.3.annotator")
    assert mismatch.value.field == "annotations.3.annotator"
    with pytest.raises(AnnotationValidationError):
        annotator_for(None, None)


# -- settings and start-up ------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth": "writes"}, "needs DEEPMINER_TOKENS or DEEPMINER_TOKENS_FILE"),
        ({"auth": "all", "tokens": SPECS, "tokens_file": "/run/secrets/tokens.json"}, "not both"),
        ({"environment": "production"}, "DEEPMINER_AUTH=off lets anyone write labels"),
        ({"auth": "sometimes", "tokens": SPECS}, "auth"),
    ],
)
def test_settings_refuse_incomplete_or_weak_auth(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**settings)


def test_settings_read_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPMINER_AUTH", "writes")
    monkeypatch.setenv("DEEPMINER_TOKENS", json.dumps(SPECS))
    settings = Settings()
    assert settings.auth == "writes" and [t.name for t in settings.tokens or []] == list(NAMES.values())


def test_tokens_file_problems_stop_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(AuthConfigError, match=f"{missing} cannot be read"):
        auth.load_authenticator(Settings(auth="writes", tokens_file=missing))
    malformed = tmp_path / "tokens.json"
    malformed.write_text(json.dumps([{**SPECS[0], "role": "owner"}]))
    with pytest.raises(AuthConfigError, match=r"at 0\.role"):
        auth.load_authenticator(Settings(auth="writes", tokens_file=malformed))
    malformed.write_text("{not json")
    with pytest.raises(AuthConfigError, match="JSON list"):
        auth.load_authenticator(Settings(auth="writes", tokens_file=malformed))


def test_missing_tokens_file_fails_the_app_start_up(
    tiny_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        Settings(
            bundle=tiny_bundle,
            database_url=f"sqlite:///{tmp_path / 'labels.db'}",
            auth="all",
            tokens_file=tmp_path / "absent.json",
        )
    )
    with pytest.raises(AuthConfigError), TestClient(app):
        pass
    assert any("start-up failed" in r.getMessage() and "absent.json" in r.getMessage() for r in caplog.records)


def test_placeholder_tokens_are_refused_outside_development(caplog: pytest.LogCaptureFixture) -> None:
    weak = [{"name": "ops", "role": "admin", "sha256": hash_token("changeme")}]
    with pytest.raises(AuthConfigError, match="placeholder tokens are refused outside development"):
        auth.load_authenticator(Settings(environment="production", auth="writes", tokens=weak))
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        assert auth.load_authenticator(Settings(auth="writes", tokens=weak)).mode == "writes"
    assert any("placeholder" in r.getMessage() for r in caplog.records)
    strong = auth.load_authenticator(Settings(environment="production", auth="all", tokens=SPECS))
    assert strong.mode == "all"


# -- HTTP: DEEPMINER_AUTH=writes ------------------------------------------------


def test_writes_mode_leaves_reads_open(writes_client: TestClient) -> None:
    for path in ("/units", "/units/3", "/units/3/history", "/units/embedding", "/openapi.json", *ALWAYS_OPEN):
        assert writes_client.get(path).status_code == 200, path


def test_write_without_or_with_a_bad_token_is_401(writes_client: TestClient) -> None:
    for headers, challenge in (
        ({}, 'Bearer realm="deepminer"'),
        ({"Authorization": "Basic ZHI6cHc="}, 'Bearer realm="deepminer"'),
        ({"Authorization": "Bearer not-a-token"}, 'Bearer realm="deepminer", error="invalid_token"'),
        (
            {"Authorization": f"Bearer {hash_token(TOKENS['annotator'])}"},
            'Bearer realm="deepminer", error="invalid_token"',
        ),
    ):
        response = writes_client.put("/units/4", json=LABEL, headers=headers)
        assert_error(response, 401, "unauthorized", "authorization")
        assert response.headers["www-authenticate"] == challenge
    # A presented token is checked even where none is needed.
    assert_error(
        writes_client.get("/units", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized", "authorization"
    )
    assert writes_client.get("/units/4/history").json()["versions"] == []


def test_reader_may_not_write_403(writes_client: TestClient) -> None:
    response = writes_client.put("/units/4", json=LABEL, headers=bearer("reader"))
    assert_error(response, 403, "forbidden", None)
    assert "annotator role" in response.json()["error"]["message"]
    assert "www-authenticate" not in response.headers
    batch = {"annotations": [{**LABEL, "unit_id": 4}]}
    assert_error(writes_client.post("/units/batch", json=batch, headers=bearer("reader")), 403, "forbidden", None)
    assert writes_client.get("/units/4/history").json()["versions"] == []


def test_401_comes_before_body_validation(writes_client: TestClient) -> None:
    assert_error(writes_client.put("/units/4", json={"label": ""}), 401, "unauthorized", "authorization")


def test_annotator_records_the_token_name(writes_client: TestClient) -> None:
    first = writes_client.put("/units/5", json=LABEL, headers=bearer("annotator"))
    assert first.status_code == 201, first.text
    assert first.json()["annotator"] == "dr_a"
    same = writes_client.put("/units/5", json={**LABEL, "annotator": "dr_a"}, headers=bearer("annotator"))
    assert same.json()["annotator"] == "dr_a" and same.json()["version"] == 2
    other = writes_client.put("/units/5", json={**LABEL, "annotator": "dr_b"}, headers=bearer("annotator"))
    assert_error(other, 422, "invalid_annotation", "annotator")
    assert "dr_a" in other.json()["error"]["message"]
    on_behalf = writes_client.put("/units/5", json={**LABEL, "annotator": "dr_b"}, headers=bearer("admin"))
    assert on_behalf.status_code == 201 and on_behalf.json()["annotator"] == "dr_b"
    own = writes_client.put("/units/5", json=LABEL, headers=bearer("admin"))
    assert own.json()["annotator"] == "lead"
    history = writes_client.get("/units/5/history").json()["versions"]
    assert [(v["annotator"], v["version"]) for v in history] == [("dr_a", 1), ("dr_a", 2), ("dr_b", 1), ("lead", 1)]


def test_batch_records_the_token_name_and_names_the_bad_item(writes_client: TestClient) -> None:
    items = [{**LABEL, "unit_id": 6}, {**LABEL, "unit_id": 7, "annotator": "someone_else"}]
    response = writes_client.post("/units/batch", json={"annotations": items}, headers=bearer("annotator"))
    assert_error(response, 422, "invalid_annotation", "annotations.1.annotator")
    assert writes_client.get("/units/6/history").json()["versions"] == []
    response = writes_client.post("/units/batch", json={"annotations": items[:1] * 2}, headers=bearer("annotator"))
    assert response.status_code == 201, response.text
    assert [(a["annotator"], a["version"]) for a in response.json()["annotations"]] == [("dr_a", 1), ("dr_a", 2)]


# -- HTTP: DEEPMINER_AUTH=all ---------------------------------------------------


def test_all_mode_needs_a_reader_for_every_route_but_probes(all_client: TestClient, phantom_png: bytes) -> None:
    files = {"file": ("m.png", phantom_png, "image/png")}
    polygon = {"polygon": "[[0, 0], [100, 0], [100, 100]]"}
    # Each route with what a reader gets: a route that went missing would answer 404 where 200 is expected.
    requests: list[tuple[Callable[..., Any], int]] = [
        (lambda **kw: all_client.get("/units", **kw), 200),
        (lambda **kw: all_client.get("/units/1", **kw), 200),
        (lambda **kw: all_client.get("/units/1/history", **kw), 200),
        (lambda **kw: all_client.get("/units/embedding", **kw), 200),
        (lambda **kw: all_client.get("/bundle-files/units/index.json", **kw), 404),  # listed, but not a PNG
        (lambda **kw: all_client.get("/quality", **kw), 200),
        (lambda **kw: all_client.get("/bundle-files/quality/worst_cases.png", **kw), 200),
        (lambda **kw: all_client.post("/explain", files=files, **kw), 200),
        (lambda **kw: all_client.post("/query/region", files=files, data=polygon, **kw), 200),
    ]
    for send, status in requests:
        response = send()
        assert_error(response, 401, "unauthorized", "authorization")
        assert response.headers["www-authenticate"].startswith("Bearer")
        read = send(headers=bearer("reader"))
        assert read.status_code == status, read.text
        if status == 404:
            assert read.json()["error"]["code"] == "not_in_bundle"
    for path in ALWAYS_OPEN:
        assert all_client.get(path).status_code == 200, path


def test_all_mode_still_needs_an_annotator_to_write(all_client: TestClient) -> None:
    assert_error(all_client.put("/units/8", json=LABEL), 401, "unauthorized", "authorization")
    assert_error(all_client.put("/units/8", json=LABEL, headers=bearer("reader")), 403, "forbidden", None)
    written = all_client.put("/units/8", json=LABEL, headers=bearer("annotator"))
    assert written.status_code == 201 and written.json()["annotator"] == "dr_a"


def test_off_mode_ignores_tokens_and_needs_a_body_annotator(make_client: Callable[..., Any]) -> None:
    with make_client() as client:
        response = client.put("/units/9", json=LABEL, headers={"Authorization": "Bearer whatever"})
        assert_error(response, 422, "invalid_annotation", "annotator")
        written = client.put("/units/9", json={**LABEL, "annotator": "dr_c"}, headers={"Authorization": "Bearer x"})
        assert written.status_code == 201 and written.json()["annotator"] == "dr_c"


def test_tokens_and_identities_stay_out_of_the_logs(
    tiny_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for client in start(tiny_bundle, tmp_path / "labels.db", auth="writes", tokens=SPECS):
        client.put("/units/2", json=LABEL, headers=bearer("annotator"))
        client.put("/units/2", json=LABEL, headers={"Authorization": "Bearer leaked-guess-123"})
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    for secret in (*TOKENS.values(), "leaked-guess-123", *(s["sha256"] for s in SPECS)):
        assert secret not in text


def test_openapi_declares_the_bearer_scheme(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, method in (
        ("/units", "get"),
        ("/units/{unit_id}", "put"),
        ("/explain", "post"),
        ("/query/region", "post"),
    ):
        operation = spec["paths"][path][method]
        assert {"bearer": []} in operation["security"], path
        assert {"401", "403"} <= set(operation["responses"]), path
    assert "security" not in spec["paths"]["/healthz"]["get"]


# -- the command line -----------------------------------------------------------


def test_cli_hashes_a_token_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKENS["admin"] + "\n"))
    assert auth.main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_token(TOKENS["admin"])
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert auth.main(["hash"]) == 2
    assert "fewer than 16" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert auth.main(["hash", "--allow-short"]) == 0
    assert capsys.readouterr().out.strip() == hash_token("short")


def test_cli_generates_a_token_and_its_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert auth.main(["generate", "--name", "dr_x", "--role", "annotator"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    entry = TokenSpec(**json.loads(lines["entry"]))
    assert entry.name == "dr_x" and entry.role == "annotator" and entry.sha256 == hash_token(lines["token"])
    assert len(lines["token"]) >= 32

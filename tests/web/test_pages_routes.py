"""The pages' routes over HTTP, without a browser: pages, static files, the lexicon, and no OpenAPI entries."""

from __future__ import annotations

import httpx
import pytest

from annotations.lexicon import CANCER_ASSOCIATIONS, CATEGORIES, MAX_LABEL_LENGTH, PHENOMENA


@pytest.mark.parametrize(
    "path", ["/ui/", "/ui/units/0", "/ui/survey", "/ui/survey?unit=3", "/ui/explain", "/ui/suspicious"]
)
def test_pages_are_served_without_a_token(service, path: str) -> None:
    # The pages hold no data, so even DEEPMINER_AUTH=all serves them; the API calls they make carry the token.
    response = httpx.get(service.url + path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/static/' in response.text


def test_the_explain_button_waits_for_its_script(service) -> None:
    # Module scripts run after the page is interactive; an enabled button clicked before explain.js attaches
    # its handler would send the form as a plain GET and reload the page (seen once in a browser test).
    html = httpx.get(f"{service.url}/ui/explain").text
    assert '<button type="submit" class="primary" id="explain-button" disabled>' in html


def test_ui_without_slash_redirects_to_the_overview(service) -> None:
    response = httpx.get(f"{service.url}/ui")
    assert response.status_code in (307, 308)
    assert response.headers["location"] == "/ui/"


def test_static_files_have_their_media_types(service) -> None:
    for name, media_type in [("api.js", "text/javascript"), ("style.css", "text/css")]:
        response = httpx.get(f"{service.url}/ui/static/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)


@pytest.mark.parametrize("path", ["../pages.py", "%2e%2e/overview.html", "..%2F..%2Fmain.py", "nope.js", ""])
def test_nothing_outside_the_static_folder_is_served(service, path: str) -> None:
    response = httpx.get(f"{service.url}/ui/static/{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_lexicon_is_the_annotation_store_vocabulary(service) -> None:
    body = httpx.get(f"{service.url}/ui/lexicon.json").json()
    assert body["categories"] == list(CATEGORIES)
    assert body["cancer_associations"] == list(CANCER_ASSOCIATIONS)
    assert body["phenomena"] == list(PHENOMENA)
    assert body["max_label_length"] == MAX_LABEL_LENGTH


def test_pages_are_not_in_the_api_document(service) -> None:
    paths = httpx.get(f"{service.url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


@pytest.mark.parametrize(
    ("path", "current"),
    [
        ("/ui/", "/ui/"),
        ("/ui/units/4", "/ui/survey"),
        ("/ui/survey?unit=4", "/ui/survey"),
        ("/ui/explain", "/ui/explain"),
        ("/ui/suspicious", "/ui/suspicious"),
    ],
)
def test_every_page_has_the_one_site_header_with_its_own_link_current(service, path: str, current: str) -> None:
    html = httpx.get(service.url + path).text
    assert html.count('<header class="site-header">') == 1 and html.count('id="session-form"') == 1
    assert html.count('aria-current="page"') == 1
    assert f'<a href="{current}" aria-current="page">' in html
    assert html.count('id="alert"') == 1 and "$" not in html.split("<main", 1)[0]

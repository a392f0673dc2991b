"""/docs: Swagger UI from local assets (no CDN), no credentials needed.

That the page really renders is checked in headless Chromium by ``make docs-check``.
"""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def page(app) -> str:
    response = app.test_client().get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def test_page_loads_only_local_assets(page):
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "http://" not in page and "https://" not in page
    assert 'data-spec-url="/openapi.json"' in page


def test_every_asset_the_page_names_is_served(app, page):
    client = app.test_client()
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        if url.endswith(".json"):
            continue
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content_length or response.get_data(), url
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in script.mimetype
    assert b"SwaggerUIBundle" in script.get_data()
    init = client.get("/docs/swagger-init.js").get_data(as_text=True)
    assert "validatorUrl: null" in init  # no call to the online validator


@pytest.mark.parametrize("path", ["/docs/assets/LICENSE", "/docs/assets/../../flexsvc/db.py",
                                  "/docs/assets/oauth2-redirect.html", "/docs/assets/"])
def test_only_listed_assets_are_served(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["status"] == 404

"""The service's API docs page, ``/docs`` (Swagger UI), with no outside request.

FastAPI's default page loads its JavaScript, CSS and favicon from CDNs, so it is blank
offline. Here the same page (FastAPI's documented ``get_swagger_ui_html``) takes its assets
from the ``fastapi-offline`` package, which ships the Swagger UI distribution files, served
under :data:`DOCS_ASSETS_URL`. ReDoc is not offered: its page fetches its logo from
``cdn.redoc.ly`` whatever its options say.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' ``Request`` annotation.
from typing import Any

DOCS_URL = "/docs"
DOCS_ASSETS_URL = "/docs-assets"


def mount_offline_docs(app: Any) -> None:
    """Serve ``/docs`` from packaged assets; create ``app`` with ``docs_url=None,
    redoc_url=None`` so FastAPI's CDN pages are not registered."""
    from importlib.resources import files

    from fastapi import Request
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "")
        return f"{root}{app.openapi_url}", f"{root}{DOCS_ASSETS_URL}"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request):
        openapi, base = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui.css",
            swagger_favicon_url=f"{base}/favicon.png",
        )

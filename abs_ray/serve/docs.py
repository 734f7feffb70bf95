"""The API docs page, offline: Swagger UI from the installed ``swagger-ui-bundle-v2``.

FastAPI's own ``/docs`` loads Swagger UI from a CDN; :func:`docs_page` and
:func:`docs_asset` serve the same page with every file from this service.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

__all__ = ["DOCS_ASSETS", "docs_asset", "docs_page", "not_found"]

#: The files of Swagger UI's dist that ``/docs`` loads (served from ``swagger-ui-bundle-v2``).
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def _swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def docs_page(title: str, root_path: str = "") -> HTMLResponse:
    """Swagger UI for ``{root_path}/openapi.json``, its JS and CSS from ``/docs/<asset>``.

    Nothing on the page points outside the service (FastAPI's default page loads Swagger
    UI from a CDN, and Swagger UI's default validator badge calls validator.swagger.io).
    """
    base = f"{root_path}/docs"
    return get_swagger_ui_html(
        openapi_url=f"{root_path}/openapi.json",
        title=f"{title} - API",
        swagger_js_url=f"{base}/swagger-ui-bundle.js",
        swagger_css_url=f"{base}/swagger-ui.css",
        swagger_favicon_url=f"{base}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


def docs_asset(name: str) -> Response:
    """One file of Swagger UI's dist, by name from :data:`DOCS_ASSETS` (404 otherwise)."""
    if name not in DOCS_ASSETS:
        return not_found()
    return FileResponse(
        _swagger_ui_dir() / name,
        media_type=DOCS_ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )


def not_found() -> JSONResponse:
    """The JSON 404 of a route that is switched off (``docs: false``)."""
    body = {"status": 404, "error": "not_found", "type": "NotFound", "detail": "not found"}
    return JSONResponse(body, status_code=404)

"""The dashboard: server-rendered pages (jinja2, autoescaped) on the service's own routes.

No script, no CDN, no external font (it must work on an air-gapped network). An administrator
logs in with the admin token; the session is a cookie (HttpOnly, SameSite=Strict, Secure over
TLS) holding an expiry and a MAC keyed from the admin token, so every server process of a
fleet accepts it and rotating the token ends every session. Every POST carries a CSRF token
(a MAC of the session) and, when the browser sends one, an Origin of this server.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tboot_py.server import views
from tboot_py.server.service import NAME_RE, Service, ServiceError

SESSION_COOKIE = "tbp_session"
SESSION_TTL = 8 * 3600
MAX_FORM = 8192

#: Pages show only what this server sends: no inline script, no outside origin.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class Sessions:
    """Stateless admin sessions: ``expiry.random.mac``."""

    def __init__(self, admin_token: str) -> None:
        self._key = hmac.new(admin_token.encode(), b"tboot-py dashboard session v1", hashlib.sha256).digest()

    def _mac(self, what: str) -> str:
        return hmac.new(self._key, what.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        exp = int((time.time() if now is None else now) + SESSION_TTL)
        body = f"{exp}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac('session|' + body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or len(cookie) > 200 or cookie.count(".") != 2:
            return False
        exp, rnd, mac = cookie.split(".")
        if not exp.isdigit() or int(exp) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(mac, self._mac(f"session|{exp}.{rnd}"))

    def csrf(self, cookie: str) -> str:
        return self._mac("csrf|" + cookie)


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("tboot_py.server", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = views.when
    env.filters["split_label"] = views.split_label
    return env


def _css() -> bytes:
    return resources.files("tboot_py.server").joinpath("static/dashboard.css").read_bytes()


def _form(body: bytes) -> dict[str, str]:
    parsed = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    return {k: v[0] for k, v in parsed.items()}


def _safe_next(target: str | None) -> str:
    """Only a local path is a place to go back to after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or (origin == "null" and request.headers.get("sec-fetch-site") == "same-origin"):
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def register(app: FastAPI, service: Service, admin_token: str, audit_logs: Sequence[Path] = ()) -> None:
    """Add the dashboard's pages to ``app`` (kept out of the OpenAPI document)."""
    sessions = Sessions(admin_token)
    env = _env()
    css = _css()

    def page(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        cookie = request.cookies.get(SESSION_COOKIE) or ""
        ok = sessions.valid(cookie)
        html = env.get_template(template).render(csrf=sessions.csrf(cookie) if ok else "", authed=ok,
                                                 path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def authed(request: Request) -> bool:
        return sessions.valid(request.cookies.get(SESSION_COOKIE))

    def to_login(request: Request) -> RedirectResponse:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urllib.parse.urlencode({"next": nxt}), status_code=303,
                                headers=_HEADERS)

    async def checked_post(request: Request) -> dict[str, str] | None:
        """The form of a POST whose session, origin and CSRF token are good; None otherwise."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not sessions.valid(cookie) or not _same_origin(request):
            return None
        body = await request.body()
        if len(body) > MAX_FORM:
            return None
        form = _form(body)
        if not hmac.compare_digest(form.get("csrf", ""), sessions.csrf(cookie or "")):
            return None
        return form

    def refused(request: Request, what: str) -> HTMLResponse:
        return page(request, "error.html.j2", status=403, title="Refused", message=what)

    @app.get("/static/dashboard.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300",
                                                             "X-Content-Type-Options": "nosniff"})

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return page(request, "login.html.j2", title="Log in", next=_safe_next(request.query_params.get("next")),
                    error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = await request.body()
        form = _form(body) if len(body) <= MAX_FORM else {}
        nxt = _safe_next(form.get("next"))
        if not _same_origin(request):
            return refused(request, "this form was sent from another site")
        if not hmac.compare_digest(form.get("token", "").strip().encode(), admin_token.encode()):
            return page(request, "login.html.j2", status=401, title="Log in", next=nxt,
                        error="That is not the admin token.")
        resp = RedirectResponse(nxt, status_code=303, headers=_HEADERS)
        resp.set_cookie(SESSION_COOKIE, sessions.issue(), max_age=SESSION_TTL, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        if await checked_post(request) is None:
            return refused(request, "missing or wrong form token")
        resp = RedirectResponse("/login", status_code=303, headers=_HEADERS)
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    @app.get("/", include_in_schema=False)
    def overview(request: Request) -> Response:
        if not authed(request):
            return to_login(request)
        query = views.FleetQuery.parse(request.query_params)
        return page(request, "overview.html.j2", title="Fleet", fleet=views.fleet(service, query), query=query,
                    states=views.SHOWN_STATES)

    @app.get("/host/{name}", include_in_schema=False)
    def host(request: Request, name: str) -> Response:
        if not authed(request):
            return to_login(request)
        if not NAME_RE.match(name):
            return not_found(request, "no such host")
        try:
            data = views.host_page(service, name)
        except ServiceError as e:
            return not_found(request, e.detail)
        return page(request, "host.html.j2", title=f"Host {name}", **data)

    @app.post("/host/{name}/reappraise", include_in_schema=False)
    async def host_reappraise(request: Request, name: str) -> Response:
        if await checked_post(request) is None:
            return refused(request, "missing or wrong form token")
        if not NAME_RE.match(name):
            return not_found(request, "no such host")
        try:
            service.reappraise(name)
        except ServiceError as e:
            return not_found(request, e.detail)
        return RedirectResponse(f"/host/{name}", status_code=303, headers=_HEADERS)

    @app.get("/result/{result_id}.json", include_in_schema=False)
    def result_json(request: Request, result_id: int) -> Response:
        if not authed(request):
            return to_login(request)
        if not 0 < result_id < 2**62:
            return JSONResponse({"error": "no_such_result", "detail": "no such result"}, status_code=404,
                                headers=_HEADERS)
        try:
            out = service.result(result_id)
        except ServiceError as e:
            return JSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status, headers=_HEADERS)
        return JSONResponse(out, headers={**_HEADERS, "Content-Disposition": "inline"})

    @app.get("/policies", include_in_schema=False)
    def policy_list(request: Request) -> Response:
        if not authed(request):
            return to_login(request)
        return page(request, "policies.html.j2", title="Policies", sets=views.policy_sets(service))

    @app.get("/policy/{scope}/{target}", include_in_schema=False)
    def policy(request: Request, scope: str, target: str) -> Response:
        if not authed(request):
            return to_login(request)
        if scope not in ("host", "group") or not NAME_RE.match(target):
            return not_found(request, "no such policy")
        sets = [s for s in views.policy_sets(service) if s["scope"] == scope and s["target"] == target]
        if not sets:
            return not_found(request, f"no policy {scope}/{target}")
        versions = sets[0]["versions"]
        newest = versions[0]["version"]
        a, b = _version(request.query_params, "a", max(newest - 1, 1)), _version(request.query_params, "b", newest)
        try:
            diff = views.policy_diff(service, scope, target, a, b)
            shown = views.policy_text(service.get_policy(scope, target, b))
        except ServiceError as e:
            return not_found(request, e.detail)
        return page(request, "policy.html.j2", title=f"Policy {scope}/{target}", set=sets[0], a=a, b=b,
                    diff=diff, shown=shown)

    @app.get("/audit", include_in_schema=False)
    def audit(request: Request) -> Response:
        if not authed(request):
            return to_login(request)
        from tboot_py.audit.trail import trail_summary

        return page(request, "audit.html.j2", title="Audit trail",
                    trails=[trail_summary(p) for p in audit_logs], changes=views.state_changes(service))

    def not_found(request: Request, message: str) -> HTMLResponse:
        return page(request, "error.html.j2", status=404, title="Not found", message=message)


def _version(params: Mapping[str, str], key: str, default: int) -> int:
    v = params.get(key, "")
    return int(v) if v.isdigit() and 0 < int(v) < 2**31 else default

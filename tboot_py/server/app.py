"""The HTTP face of the service: a FastAPI app over :class:`~tboot_py.server.service.Service`.

Routes hold no logic: they authenticate, parse, call the service and map its refusals
(:class:`ServiceError`: a stable ``error`` code and a one-line ``detail``) to HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from tboot_py.server.service import Host, Service, ServiceError

DEFAULT_MAX_BODY = 4 * 1024 * 1024

Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")]


class ErrorBody(BaseModel):
    error: str
    detail: str


class EnrollRequest(BaseModel):
    name: str = Field(max_length=255, description="host name")
    ek_certificate: str = Field(max_length=16384, description="EK certificate, base64 DER")
    ak_public: str = Field(max_length=4096, description="AK TPMT_PUBLIC, base64")


class EnrollChallengeBody(BaseModel):
    enrollment_id: str
    id_object: str = Field(description="TPM2B_ID_OBJECT body, base64 (for TPM2_ActivateCredential)")
    encrypted_secret: str = Field(description="TPM2B_ENCRYPTED_SECRET body, base64")
    expires_at: float


class ActivateRequest(BaseModel):
    secret: str = Field(max_length=200, description="the credential TPM2_ActivateCredential returned, base64")


class ActivateBody(BaseModel):
    status: str = Field(description="enrolled, or pending (awaits an administrator's approval)")
    host: str
    token: str | None = Field(default=None, description="the agent's bearer token (only when enrolled)")


class NonceBody(BaseModel):
    nonce: str
    expires_at: float
    interval_s: float


class AttestRequest(BaseModel):
    nonce: str = Field(max_length=256)
    evidence: dict[str, Any] = Field(description="evidence bundle (format tboot-py-evidence/1)")


class AttestBody(BaseModel):
    result_id: int
    allowed: bool
    status: str
    reason: str
    ear: str
    state: str


class HostPatch(BaseModel):
    group: str | None = Field(default=None, max_length=255, description="host group ('' to clear)")
    interval_s: float | None = Field(default=None, description="attestation interval in seconds")


class WebhookRequest(BaseModel):
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=128, description="HMAC-SHA256 key; deliveries carry X-Tboot-Signature")


def _b64(v: str, what: str) -> bytes:
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ServiceError(400, "bad_base64", f"{what} is not base64") from e


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413), whether or not
    Content-Length announces them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length" and (not v.isdigit() or int(v) > self.limit):
                await _send_error(send, 413, "body_too_large", f"request bodies are capped at {self.limit} bytes")
                return
        # Read the whole body first (at most the cap), then hand it on: the app never sees
        # a body over the cap, and a refusal is a clean 413 whatever the route.
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _send_error(send, 413, "body_too_large", f"request bodies are capped at {self.limit} bytes")
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_error(send: Any, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 512:
        raise ServiceError(401, "missing_token", "an Authorization: Bearer token is required")
    return authorization[7:].strip()


def _agent_host(request: Request, authorization: Annotated[str | None, Header()] = None) -> Host:
    """The host whose agent token this is."""
    service: Service = request.app.state.service
    return service.host_for_token(_bearer(authorization))


def _admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    if not hmac.compare_digest(_bearer(authorization).encode(), request.app.state.admin_token.encode()):
        raise ServiceError(401, "bad_token", "wrong admin token")


AgentHost = Annotated[Host, Depends(_agent_host)]
Admin = Depends(_admin)


def create_app(service: Service, admin_token: str, max_body: int = DEFAULT_MAX_BODY,
               scheduler: bool = True, tick: float = 1.0, audit_logs: Sequence[FilePath] = ()) -> FastAPI:
    """The FastAPI application. ``scheduler`` runs the liveness sweep and webhook deliveries
    in a background thread of this process (every process does; row leases split the work).
    ``audit_logs``: launch audit logs the dashboard's audit trail page shows."""
    from tboot_py.server.scheduler import Scheduler

    sched = Scheduler(service, tick) if scheduler else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if sched is not None:
            sched.start()
        try:
            yield
        finally:
            if sched is not None:
                sched.stop()

    app = FastAPI(title="tboot-py attestation service", version="1", lifespan=lifespan,
                  description="Remote attestation (RFC 9334 verifier): enrollment, nonces, evidence appraisal, "
                              "EAR results, policies, liveness, webhooks.")
    app.add_middleware(BodyLimit, limit=max_body)
    errs: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 413)}

    @app.exception_handler(ServiceError)
    async def _service_error(_r: Request, e: ServiceError) -> JSONResponse:
        return JSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": "bad_request", "detail": f"{where}: {first.get('msg', 'invalid')}"},
                            status_code=400)

    @app.get("/.well-known/jwks.json", tags=["public"])
    def jwks() -> dict[str, Any]:
        """The EAR signing keys (RFC 7517)."""
        return service.jwks()

    @app.get("/v1/health", tags=["public"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "server_id": service.server_id}

    @app.post("/v1/enroll", tags=["agent"], responses=errs)
    def enroll(req: EnrollRequest) -> EnrollChallengeBody:
        """Start enrollment: the EK chain is checked and a credential is made for the AK."""
        ch = service.enroll_start(req.name, _b64(req.ek_certificate, "ek_certificate"),
                                  _b64(req.ak_public, "ak_public"))
        return EnrollChallengeBody(enrollment_id=ch.enrollment_id, id_object=base64.b64encode(ch.id_object).decode(),
                                   encrypted_secret=base64.b64encode(ch.encrypted_secret).decode(),
                                   expires_at=ch.expires_at)

    @app.post("/v1/enroll/{enrollment_id}/activate", tags=["agent"], responses=errs)
    def activate(enrollment_id: Annotated[str, Path(max_length=64)], req: ActivateRequest) -> ActivateBody:
        """Finish enrollment with the activated credential; returns the agent token once bound."""
        out = service.enroll_finish(enrollment_id, _b64(req.secret, "secret"))
        return ActivateBody(status=out.status, host=out.host, token=out.token)

    @app.post("/v1/attest/nonce", tags=["agent"], responses=errs)
    def nonce(host: AgentHost) -> NonceBody:
        n, exp = service.issue_nonce(host)
        return NonceBody(nonce=n, expires_at=exp, interval_s=host.interval_s)

    @app.post("/v1/attest", tags=["agent"], responses=errs)
    def attest(host: AgentHost, req: AttestRequest) -> AttestBody:
        """Appraise evidence for a nonce this host was issued; returns the signed EAR."""
        out = service.attest(host, req.nonce, json.dumps(req.evidence).encode())
        return AttestBody(result_id=out.result_id, allowed=out.allowed, status=out.status, reason=out.reason,
                          ear=out.ear, state=out.state)

    @app.get("/v1/hosts/{name}/ear", tags=["public"], responses=errs)
    def host_ear(name: Name) -> dict[str, Any]:
        """The host's latest EAR (signed; check it with the JWKS)."""
        return service.latest_ear(name)

    @app.get("/v1/hosts", tags=["admin"], dependencies=[Admin], responses=errs)
    def list_hosts() -> dict[str, Any]:
        return {"hosts": service.list_hosts(), "counts": service.state_counts()}

    @app.get("/v1/hosts/{name}", tags=["admin"], dependencies=[Admin], responses=errs)
    def host(name: Name, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        return service.host_detail(name, limit)

    @app.patch("/v1/hosts/{name}", tags=["admin"], dependencies=[Admin], responses=errs)
    def patch_host(name: Name, req: HostPatch) -> dict[str, Any]:
        h = service.update_host(name, req.group, req.interval_s)
        return {"name": h.name, "group": h.host_group, "interval_s": h.interval_s, "state": h.state}

    @app.post("/v1/hosts/{name}/approve", tags=["admin"], dependencies=[Admin], responses=errs)
    def approve(name: Name) -> dict[str, Any]:
        return {"approved": service.approve(name)}

    @app.post("/v1/hosts/{name}/reappraise", tags=["admin"], dependencies=[Admin], responses=errs)
    def reappraise(name: Name) -> dict[str, Any]:
        r = service.reappraise(name)
        if r is None:
            raise ServiceError(404, "no_result", f"host {name!r} has no evidence yet")
        return {"result_id": r.result_id, "allowed": r.allowed, "status": r.status, "reason": r.reason,
                "state": r.state, "ear": r.ear}

    @app.get("/v1/enrollments", tags=["admin"], dependencies=[Admin], responses=errs)
    def pending() -> dict[str, Any]:
        return {"pending": service.pending_enrollments()}

    @app.get("/v1/results/{result_id}", tags=["admin"], dependencies=[Admin], responses=errs)
    def result(result_id: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, Any]:
        """One stored result with its appraisal and the evidence it was made from."""
        return service.result(result_id)

    @app.put("/v1/policies/{scope}/{target}", tags=["admin"], dependencies=[Admin], responses=errs)
    def put_policy(scope: Annotated[str, Path(pattern="^(host|group)$")], target: Name,
                   body: Annotated[bytes, Body(media_type="application/octet-stream")]) -> dict[str, Any]:
        """A new policy version (a DSSE envelope when the server has trust keys); the latest
        evidence of the hosts it applies to is re-appraised."""
        return service.put_policy(scope, target, body)

    @app.get("/v1/policies", tags=["admin"], dependencies=[Admin], responses=errs)
    def list_policies() -> dict[str, Any]:
        return {"policies": service.list_policies()}

    @app.get("/v1/policies/{scope}/{target}", tags=["admin"], dependencies=[Admin], responses=errs)
    def get_policy(scope: Annotated[str, Path(pattern="^(host|group)$")], target: Name,
                   version: Annotated[int | None, Query(ge=1, le=2**31)] = None) -> Response:
        return Response(service.get_policy(scope, target, version), media_type="application/octet-stream")

    @app.post("/v1/webhooks", tags=["admin"], dependencies=[Admin], responses=errs)
    def add_webhook(req: WebhookRequest) -> dict[str, Any]:
        return {"id": service.add_webhook(req.url, req.secret)}

    @app.get("/v1/webhooks/deliveries", tags=["admin"], dependencies=[Admin], responses=errs)
    def deliveries() -> dict[str, Any]:
        return {"deliveries": service.list_deliveries()}

    from tboot_py.server import web

    web.register(app, service, admin_token, audit_logs)
    app.state.service = service
    app.state.admin_token = admin_token
    return app

"""The HTTP layer: decode, dispatch, encode. Every policy lives in the handlers.

A body that is not a well-formed AdmissionReview gets 400 with a JSON reason; the
wrong Content-Type 415; a body over the cap 413. A well-formed review always gets
a review back with its `uid`: a handler that raises becomes a denial (and an error
log), never a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from policies.enrich import NetworkPolicyEnricher
from webhook.admission import wire
from webhook.admission.review import (
    AdmissionRequest,
    Decision,
    ReviewError,
    decode_review,
    denied,
    describe,
    object_of,
    review_response,
)
from webhook.decisions.inject import PodInjector
from webhook.decisions.label_rights import Authorizer
from webhook.decisions.policy import AdmissionPolicy
from webhook.decisions.snapshot import ClusterState
from webhook.decisions.validate import (
    NamespaceLabels,
    NetworkAttachmentValidator,
    validate_attachment_rule,
    validate_pod,
)
from webhook.multus.json_types import object_field
from webhook.server.settings import ServeSettings
from webhook.telemetry.logs import RepeatSampler, log_fields
from webhook.telemetry.metrics import Metrics

Handler = Callable[[AdmissionRequest, ClusterState, AdmissionPolicy], Decision]

log = logging.getLogger("multihome.admission")
# Oversized bodies up to this size are read and dropped so the client sees the 413.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024


def default_routes(authorizer: Authorizer | None = None) -> dict[str, Handler]:
    """The admission endpoints of DESIGN.md, path to handler; `authorizer` decides namespace labels."""
    return {
        "/mutate/pods": PodInjector(),
        "/mutate/networkpolicies": NetworkPolicyEnricher(),
        "/validate/pods": validate_pod,
        "/validate/networkattachmentdefinitions": NetworkAttachmentValidator(),
        "/validate/attachmentrules": validate_attachment_rule,
        "/validate/namespaces": NamespaceLabels(authorizer),
    }


def create_app(
    settings: ServeSettings,
    state: ClusterState,
    *,
    routes: Mapping[str, Handler] | None = None,
    metrics: Metrics | None = None,
    authorizer: Authorizer | None = None,
) -> Flask:
    """Build the Flask app serving `routes` over `state`."""
    app = Flask("multihome")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app_metrics = metrics or Metrics()
    app.extensions["multihome"] = {"settings": settings, "state": state, "metrics": app_metrics}

    for path, handler in (routes if routes is not None else default_routes(authorizer)).items():
        app.add_url_rule(
            path,
            endpoint=path,
            view_func=_review_view(path, handler, settings, state, app_metrics),
            methods=["POST"],
        )

    _add_probes(app, settings, state, app_metrics)
    _add_error_handlers(app, app_metrics)
    return app


def _add_probes(app: Flask, settings: ServeSettings, state: ClusterState, app_metrics: Metrics) -> None:
    """`/healthz`, `/readyz` (ready while the last synced state answers) and `/metrics`."""

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        if state.ready():
            # Still ready while the API server is away: the last synced state answers, and
            # taking every replica out of the Service would stop admission altogether.
            degraded = sorted(s.resource for s in state.sources() if s.synced and not s.watching)
            if degraded:
                reason = "cannot list or watch these resources; answering from the last synced state"
                return jsonify(status="ready", degraded=degraded, reason=reason), 200
            return jsonify(status="ready"), 200
        return jsonify(status="not ready", reason="cluster state has not synced yet"), 503

    @app.get("/metrics")
    def metrics_view() -> Response:
        app_metrics.record_state(state.counts(), state.sources())
        if settings.tls_cert is not None:
            app_metrics.record_certificate(settings.tls_cert)
        body, content_type = app_metrics.exposition()
        return Response(body, content_type=content_type)


def _add_error_handlers(app: Flask, app_metrics: Metrics) -> None:
    """Errors outside a handler as JSON with a reason, counted; never a traceback to the client."""

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[Response, int]:
        code = err.code or 500
        if code in (400, 413, 415):
            app_metrics.rejected.labels(path=request.path, code=str(code)).inc()
        return jsonify(error=err.name, reason=err.description), code

    @app.errorhandler(Exception)
    def unexpected_error(err: Exception) -> tuple[Response, int]:
        # Outside any handler (handlers' errors become denials); no traceback to the client.
        log.error("unexpected error", exc_info=err, extra={"path": request.path})
        return jsonify(error="Internal Server Error", reason="unexpected error; see the server log"), 500


def _review_view(
    path: str, handler: Handler, settings: ServeSettings, state: ClusterState, metrics: Metrics
) -> Callable[[], tuple[Response, int]]:
    sampler = RepeatSampler()

    def view() -> tuple[Response, int]:
        started = time.perf_counter()
        environ = request.environ
        # The header as sent, without werkzeug parsing its parameters: a charset is all it carries.
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if mimetype != "application/json":
            return _reject(
                metrics,
                path,
                415,
                f"Content-Type must be application/json, got {mimetype or 'none'}",
            )
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            _drain(length)
            return _reject(metrics, path, 413, f"body of {length} bytes exceeds {_body_cap(settings)}")
        if length is not None:
            # What the API server sends: a length within the cap, read straight from the server's
            # stream (werkzeug's limiting stream around it cost 4 of 10 us a read). A short body
            # (the client went away) fails to decode below, as a 400.
            body = environ["wsgi.input"].read(length)
        else:
            try:
                body = request.get_data(cache=False)  # chunked: werkzeug enforces the cap
            except RequestEntityTooLarge:
                return _reject(metrics, path, 413, f"body exceeds {_body_cap(settings)}")
        try:
            review = decode_review(body)
        except ReviewError as err:
            return _reject(metrics, path, 400, str(err))
        decision = _decide(path, handler, review, settings, state, metrics)
        payload = review_response(uid=review["uid"], decision=decision)
        elapsed = time.perf_counter() - started
        metrics.review(path, review["operation"], decision.outcome, elapsed)
        _log_review(path, review, decision, elapsed, sampler)
        return Response(wire.encode(payload), mimetype="application/json"), 200

    view.__name__ = "review_" + path.strip("/").replace("/", "_")
    return view


def _decide(
    path: str,
    handler: Handler,
    review: AdmissionRequest,
    settings: ServeSettings,
    state: ClusterState,
    metrics: Metrics,
) -> Decision:
    try:
        return handler(review, state, settings.policy)
    except Exception as err:
        metrics.handler_errors.labels(path=path).inc()
        log.error(
            "handler failed; denying",
            exc_info=err,
            extra={"path": path, "uid": review["uid"], "object": describe(review)},
        )
        return denied(
            f"multihome could not decide on {describe(review)} ({type(err).__name__}); "
            "this is a bug in multihome: the server log has the details"
        )


def _body_cap(settings: ServeSettings) -> str:
    return f"the cap of {settings.max_body_bytes} bytes (--max-body-bytes; chart value server.maxBodyBytes)"


def _drain(length: int) -> None:
    """Read and drop an oversized body, up to a bound, so the client can read our 413.

    A client still sending when the server closes gets a broken pipe instead of the
    answer; past the bound, closing is cheaper than reading.
    """
    if length > DRAIN_LIMIT_BYTES:
        return
    stream = request.environ["wsgi.input"]
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        remaining -= len(chunk)


def _reject(metrics: Metrics, path: str, code: int, reason: str) -> tuple[Response, int]:
    metrics.rejected.labels(path=path, code=str(code)).inc()
    log.info("request rejected", extra={"path": path, "status": code, "reason": reason})
    names = {400: "Bad Request", 413: "Request Entity Too Large", 415: "Unsupported Media Type"}
    return jsonify(error=names[code], reason=reason), code


def _log_review(
    path: str, review: AdmissionRequest, decision: Decision, elapsed: float, sampler: RepeatSampler
) -> None:
    """One line per review: info when multihome changed, refused or warned; debug when it only allowed.

    Plain allows are most of the traffic (every Pod of every namespace no rule selects)
    and carry nothing to act on; `multihome_admission_reviews` counts them all. An
    injection's line repeating one written in the last few seconds (a ReplicaSet's
    replicas) is at debug too, and the next one written counts it (`RepeatSampler`).
    Denials and warnings are always written.
    """
    level = logging.INFO if decision.patch or decision.warnings or not decision.allowed else logging.DEBUG
    sampled = decision.allowed and bool(decision.patch) and not decision.warnings  # an injection
    if not sampled and not log.isEnabledFor(level):
        return
    obj = object_of(review)
    metadata = object_field(obj, "metadata")
    namespace = review.get("namespace") or metadata.get("namespace") or ""
    name = review.get("name") or metadata.get("name") or metadata.get("generateName") or ""
    repeats = 0
    if sampled:
        # By its hash: the names and the patch come from the review and can be long, or
        # not strings at all (a name that is a list is the API server's to refuse).
        run = (path, review["operation"], str(namespace), str(name), decision.encoded_patch)
        admitted = sampler.admit(hash(run))
        if admitted is None:
            level = logging.DEBUG
        else:
            repeats = admitted
    if not log.isEnabledFor(level):
        return
    fields = {
        "path": path,
        "uid": review["uid"],
        "kind": review["kind"]["kind"],
        "operation": review["operation"],
        "namespace": namespace,
        "object_name": name,
        "decision": decision.outcome,
        "warnings": len(decision.warnings),
        "duration_ms": round(elapsed * 1000, 3),
    }
    if repeats:
        fields["repeats"] = repeats
    if not decision.allowed:
        fields["reason"] = decision.message
    log_fields(log, level, "review", fields)

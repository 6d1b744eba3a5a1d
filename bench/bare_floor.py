"""The bare floor: the least any Python admission webhook on gunicorn and Flask can do.

A Flask app that answers every review with a constant allow, under stock gunicorn
gthread with the same TLS certificate: no JSON logs, no metrics, no checks on the
review. It reads the body and takes `request.uid` out of it, because the API server
refuses a response whose uid is not the request's; nothing less is a webhook.

`bench/floor.py` is the other floor: multihome's own stack with a constant decision,
which keeps multihome's decoding, logging and metrics in the floor. The hot-path
benchmark (`bench/hotpath.py`) compares against this one, so those costs show.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from gunicorn.app.base import BaseApplication


def create_app(answer: dict[str, Any] | None = None) -> Flask:
    """The floor; with `answer` (an AdmissionReview response), it answers that instead of a plain allow.

    The answer is encoded once, around its uid: what is left per review is the
    transport of an answer of that size, with no work to make it.
    """
    app = Flask("bare-floor")

    def allow() -> Response:
        uid = json.loads(request.get_data())["request"]["uid"]
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": True},
            }
        )
        return Response(body, content_type="application/json")

    view = allow
    if answer is not None:
        reply: dict[str, object] = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
        reply["response"] = {"uid": None, **{k: v for k, v in answer["response"].items() if k != "uid"}}
        before, after = json.dumps(reply).split("null", 1)  # the uid's null: the first one

        def answer_as_given() -> Response:
            uid = json.loads(request.get_data())["request"]["uid"]
            return Response(before + json.dumps(uid) + after, content_type="application/json")

        view = answer_as_given

    for path in ("/floor", "/mutate/pods", "/validate/pods", "/mutate/networkpolicies"):
        app.add_url_rule(path, endpoint=path, view_func=view, methods=["POST"])
    app.add_url_rule("/readyz", endpoint="readyz", view_func=lambda: "ok")
    return app


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], answer: dict[str, Any] | None) -> None:
        self.options, self.answer = options, answer
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--worker-class", default="gthread", help="gthread, or another gthread subclass")
    parser.add_argument(
        "--answer",
        type=Path,
        help="an AdmissionReview response to answer with (uid replaced) instead of allow",
    )
    args = parser.parse_args()
    Server(
        {
            "bind": [args.bind],
            "workers": args.workers,
            "threads": args.threads,
            "worker_class": args.worker_class,
            "keepalive": 75,
            "certfile": args.tls_cert,
            "keyfile": args.tls_key,
            "loglevel": args.log_level,
            "control_socket_disable": True,
        },
        json.loads(args.answer.read_text()) if args.answer else None,
    ).run()


if __name__ == "__main__":
    main()

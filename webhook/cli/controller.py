"""`controller`: the background work, one replica active by Lease (policies.controllers)."""

from __future__ import annotations

import argparse
import logging.config

from policies.controllers.manager import run_controller
from webhook.cli.parser import controller_settings_from
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.cluster.live import LiveState
from webhook.telemetry.logs import lean_records, logging_config


def run(args: argparse.Namespace) -> int:
    """`controller` as the command line asks."""

    settings = controller_settings_from(args)
    logging.config.dictConfig(logging_config(settings.log_level))
    lean_records()
    api = HttpKubeApi(Endpoint.load(settings.kubeconfig, settings.kube_context or None))
    return run_controller(settings, api, LiveState(api))

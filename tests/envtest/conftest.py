"""The real-control-plane tier: one control plane per module, from KUBEBUILDER_ASSETS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.envtest.controlplane import ControlPlane, assets_directory


@pytest.fixture(scope="module")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for the module; a module sets `CONTROL_PLANE = {...}` for options."""
    options = getattr(request.module, "CONTROL_PLANE", {})
    workdir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with ControlPlane(assets_directory(), workdir, **options) as plane:
        yield plane

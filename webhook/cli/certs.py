"""`certs`: the CA and the serving pair, in a folder or a Secret, and the caBundles."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from certs.issue import CertificateRequest, ensure_certificates
from certs.sync import patch_ca_bundles, sync_certificates
from webhook.cli.common import UsageError, endpoint_of
from webhook.cluster.kube import HttpKubeApi
from webhook.decisions.wording import plural


def run(args: argparse.Namespace) -> int:
    """`certs` as the command line asks."""

    request = CertificateRequest(args.service, args.namespace, tuple(args.dns), tuple(args.ip))
    configuration = (args.webhook_configuration or args.service) if args.patch_webhooks else None
    if args.secret:
        return _certs_in_secret(args, request, configuration)
    out = Path(args.out)
    result = ensure_certificates(out, request, force=args.force)
    if configuration:
        api = HttpKubeApi(endpoint_of(args))
        bundle = base64.b64encode((out / "ca.crt").read_bytes()).decode()
        print(
            f"caBundle written to {plural(patch_ca_bundles(api, configuration, bundle), 'webhook')} of {configuration}"
        )
    verb = "issued" if result.issued else "kept"
    print(
        f"{verb} {out / 'tls.crt'} ({result.reason}); valid until {result.not_after:%Y-%m-%d}; "
        f"CA {out / 'ca.crt'} {'created' if result.ca_created else 'reused'}"
    )
    return 0


def _certs_in_secret(args: argparse.Namespace, request: CertificateRequest, configuration: str | None) -> int:

    namespace, slash, name = str(args.secret).partition("/")
    if not slash or not namespace or not name:
        raise UsageError(f'--secret "{args.secret}" is not NAMESPACE/NAME')
    api = HttpKubeApi(endpoint_of(args))
    result = sync_certificates(api, request, namespace, name, configuration)
    verb = "issued" if result.certificate.issued else "kept"
    print(
        f"{verb} the pair in Secret {args.secret} ({result.certificate.reason}), valid until "
        f"{result.certificate.not_after:%Y-%m-%d}; secret {'written' if result.secret_written else 'unchanged'}; "
        f"{plural(result.webhooks_patched, 'caBundle')} updated"
    )
    return 0

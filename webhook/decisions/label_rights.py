"""Who may change `multihome.io/` namespace labels, as a decision asks it.

The verb, group and resource a right is checked against, the requesting subject, and
the `Authorizer` interface: `webhook.cluster.authorizer` asks the API server's own
authorizer with a SubjectAccessReview; with file state, `NoAuthorizer` answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

LABEL_VERB: Final = "label"
LABEL_GROUP: Final = "multihome.io"
LABEL_RESOURCE: Final = "namespaces"


@dataclass(frozen=True)
class Subject:
    """The requesting user as the AdmissionReview's userInfo gives it."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_user_info(cls, user: Mapping[str, object]) -> Subject:
        """From `request.userInfo` (already checked by the review decoder)."""
        groups = user.get("groups")
        extra = user.get("extra")
        return cls(
            username=str(user.get("username") or ""),
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            uid=str(user.get("uid") or ""),
            extra=tuple(
                sorted(
                    (str(k), tuple(str(x) for x in v))
                    for k, v in (extra.items() if isinstance(extra, dict) else ())
                    if isinstance(v, list)
                )
            ),
        )


@dataclass(frozen=True)
class Verdict:
    """The authorizer's answer; `error` when it could not be asked."""

    allowed: bool
    reason: str = ""
    error: str = ""


class Authorizer(Protocol):
    """Answers whether a subject may change `multihome.io/` labels on a namespace."""

    def may_label(self, subject: Subject, namespace: str) -> Verdict:
        """Allowed, refused, or not known (`error`)."""
        ...


class NoAuthorizer:
    """File state has no API server to ask: only the static `--label-admins` decide."""

    def may_label(self, subject: Subject, namespace: str) -> Verdict:
        del subject, namespace
        return Verdict(False, error="no API server to ask (file state): only --label-admins apply")


def principals_text(principals: Sequence[object]) -> str:
    """The static label admins as a user reads them: `none` when there are none."""
    return ", ".join(str(p) for p in principals) or "none"

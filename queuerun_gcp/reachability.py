"""Who can reach a deployed app, as data: the Cloud Run settings an ``access`` choice means, and the
warnings a user should see when the declarations and the access setting disagree.

Pure functions: the component applies them, ``queuerun preview`` prints the warnings, the tests read both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from queuerun.spec import QueueSpec

from .constants import PUSH_AUTH_IAM, PUSH_AUTH_VERIFY

# "Internal" ingress admits Pub/Sub push subscriptions of the same project (and VPC callers), never
# the internet: cloud.google.com/run/docs/securing/ingress ("Available ingress settings").
INGRESS_INTERNAL: Final = "INGRESS_TRAFFIC_INTERNAL_ONLY"
INGRESS_ALL: Final = "INGRESS_TRAFFIC_ALL"


@dataclass(frozen=True)
class Door:
    """The Cloud Run front door of one app."""

    ingress: str
    all_users_invoker: bool
    """``roles/run.invoker`` for ``allUsers`` on the service."""
    invoker_iam_disabled: bool
    push_auth: str
    """The runtime's ``QUEUERUN_PUSH_AUTH``: how the push server checks Pub/Sub's token."""

    @property
    def iam_checked(self) -> bool:
        """Whether Cloud Run checks every request's ID token against ``roles/run.invoker`` itself."""
        return not (self.all_users_invoker or self.invoker_iam_disabled)


def door(access: str, *, invoker_iam_disabled: bool) -> Door:
    """The front door ``access`` asks for (validated beforehand).

    On an IAM-protected service Cloud Run checks the push token (signature, audience, invoker) and hands
    the container the token with its signature removed (cloud.google.com/run/docs/troubleshooting,
    "SIGNATURE_REMOVED_BY_GOOGLE"); the server can then only check its claims. Where Cloud Run checks no
    token (``allUsers`` or the invoker check disabled) the token arrives as Pub/Sub signed it and the
    server verifies it in full.
    """
    public = access == "public"
    return Door(
        ingress=INGRESS_INTERNAL if access == "private" else INGRESS_ALL,
        all_users_invoker=public and not invoker_iam_disabled,
        invoker_iam_disabled=public and invoker_iam_disabled,
        push_auth=PUSH_AUTH_VERIFY if public else PUSH_AUTH_IAM,
    )


def warnings(access: str, specs: Sequence[QueueSpec], *, websockets: bool) -> list[str]:
    """What the declarations expect that ``access`` will not let happen (nothing fails: the user decides)."""
    http = [spec.name for spec in specs if spec.http is True]
    found: list[str] = []
    if http and access == "private":
        found.append(
            f"queues {http!r} have http=True but access='private': their endpoints are reachable only from "
            "inside the project's VPC network by members granted roles/run.invoker (grant_invoke); set "
            "access='public' for browsers or access='iam' for other services"
        )
    elif http and access == "iam":
        found.append(
            f"queues {http!r} have http=True and access='iam': only callers with a Google ID token of a member "
            "granted roles/run.invoker (grant_invoke) reach them, never a browser; set access='public' for browsers"
        )
    if websockets and access != "public":
        found.append(
            f"websockets=True but access={access!r}: browsers cannot open /_ws on a service that needs an ID "
            "token (or internal ingress); set access='public'"
        )
    if access == "public" and not http and not websockets:
        found.append(
            "access='public' opens the service to the internet but no queue has http=True and websockets is "
            "False: nothing there is for anonymous callers; access='private' is enough for Pub/Sub"
        )
    return found


def api_warning(apis: Sequence[str]) -> str:
    """The warning when API management is left to the user: the exact list to enable."""
    return (
        "enable_apis=False: enable these APIs before `pulumi up` (a fresh project has none of them): "
        f"gcloud services enable {' '.join(apis)}"
    )

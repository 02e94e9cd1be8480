"""Cloud Run's front door, played in-process in front of the real push server.

``Door.from_graph(graph, service_name)`` reads, from a Pulumi resource graph built under mocks, what
Cloud Run would enforce before a request reaches the container: whether the service can become
ready at all (its image exists), ingress, the invoker IAM check with its accepted audiences, the
request timeout and the concurrency limit. ``CloudRunFrontDoor(door, upstream, certs=...)`` is an
ASGI app applying those rules, in that order, to each request, and forwarding what passes to
``upstream`` (the push server's Starlette app) the way Cloud Run does: a token it checked arrives
with its signature replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``.

Each rule cites the Google page it plays (URLs as in docs/platform-facts.md). Where Google's text
was not found the choice is marked UNCONFIRMED. Requests carry a test-only header naming their
network origin (``ORIGIN_HEADER``), which the door strips before forwarding.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from google.auth import exceptions as google_exceptions
from google.auth import jwt

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CertsSource = Callable[[], Mapping[str, str]]
"""Returns Google's current certificates, ``{key id: PEM}`` (the test's stand-in for Google)."""

ORIGIN_HEADER: Final = "x-rehearsal-origin"
ORIGINS: Final = ("pubsub-same-project", "internet", "vpc")
SIGNATURE_REMOVED: Final = "SIGNATURE_REMOVED_BY_GOOGLE"
INVOKER_ROLE: Final = "roles/run.invoker"
INGRESS_ALL: Final = "INGRESS_TRAFFIC_ALL"
INGRESS_INTERNAL: Final = "INGRESS_TRAFFIC_INTERNAL_ONLY"
INGRESS_INTERNAL_LB: Final = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
GOOGLE_ISSUERS: Final = ("https://accounts.google.com", "accounts.google.com")

SERVICE_TYPE: Final = "gcp:cloudrunv2/service:Service"
INVOKER_TYPE: Final = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
REPOSITORY_TYPE: Final = "gcp:artifactregistry/repository:Repository"
DYNAMIC_PREFIX: Final = "pulumi-python:dynamic"

# UNCONFIRMED: no Google text gives the status of a request refused by ingress
# (https://cloud.google.com/run/docs/securing/ingress says only that such requests "cannot reach
# your service"); 403 is our stand-in. Any non-2xx is a nack to Pub/Sub, so nothing depends on it.
INGRESS_REFUSED: Final = 403
NOT_READY: Final = 503
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class ServiceNotReady(Exception):
    """The service would never become ready: no revision serves, every request fails."""


@dataclass(frozen=True)
class Door:
    """What Cloud Run enforces in front of one service, read from its Pulumi graph."""

    resource_name: str
    service_name: str
    url: str
    ingress: str
    custom_audiences: tuple[str, ...]
    invokers: frozenset[str]
    """Members granted roles/run.invoker on the service."""
    invoker_iam_disabled: bool
    timeout: float
    """The template's request timeout, seconds."""
    max_concurrency: int
    """``maxInstanceRequestConcurrency``: requests in flight per instance."""
    max_instances: int
    image: str | None
    image_problem: str | None
    """Why the image cannot exist (the service never becomes ready), or None."""
    env: Mapping[str, str]

    @classmethod
    def from_graph(cls, graph: Any, service_name: str) -> Door:
        """The door of the service registered as ``service_name`` (its Pulumi logical name)."""
        service = graph.named(service_name)
        if service.type != SERVICE_TYPE:
            raise ValueError(f"{service_name!r} is a {service.type}, not a {SERVICE_TYPE}")
        inputs, template = service.inputs, service.inputs.get("template") or {}
        (container,) = template.get("containers") or [{}]
        name = str(inputs.get("name") or service_name)
        url = service.outputs.get("uri")
        if not url:
            raise ValueError(f"{service_name!r}: no uri output (the mocks fill it in)")
        invokers = frozenset(
            r.inputs["member"]
            for r in graph.resources
            if r.type == INVOKER_TYPE and r.inputs.get("role") == INVOKER_ROLE and r.inputs.get("name") == name
        )
        image = container.get("image") or None
        scaling = template.get("scaling") or {}
        return cls(
            resource_name=service_name,
            service_name=name,
            url=str(url),
            ingress=str(inputs.get("ingress") or INGRESS_ALL),  # the API's default is "all"
            custom_audiences=tuple(inputs.get("customAudiences") or ()),
            invokers=invokers,
            invoker_iam_disabled=bool(inputs.get("invokerIamDisabled")),
            # Defaults: https://cloud.google.com/run/docs/configuring/request-timeout ("5 minutes");
            # https://cloud.google.com/run/docs/about-concurrency (80 per vCPU; 1 vCPU by default).
            timeout=_seconds(template.get("timeout") or "300s"),
            max_concurrency=int(template.get("maxInstanceRequestConcurrency") or 80),
            max_instances=int(scaling.get("maxInstanceCount") or 100),
            image=image,
            image_problem=image_problem(graph, image),
            env={e["name"]: str(e.get("value", "")) for e in container.get("envs") or []},
        )

    @property
    def iam_checked(self) -> bool:
        """Whether Cloud Run checks an ID token before the container sees the request.

        https://cloud.google.com/run/docs/authenticating/public: a service is public when the invoker
        IAM check is disabled or ``allUsers`` holds the Cloud Run Invoker role.
        """
        return not (self.invoker_iam_disabled or "allUsers" in self.invokers)

    @property
    def audiences(self) -> tuple[str, ...]:
        """Audiences Cloud Run's IAM layer admits: the run.app URL and the declared custom audiences.

        https://cloud.google.com/run/docs/configuring/custom-audiences: the token's ``aud`` must match
        "the receiving service's ``*.run.app`` URL", or a custom audience declared on the service.
        (The deterministic run.app URL form is not modelled; the mocks give one URL.)
        """
        return (self.url, *self.custom_audiences)

    @property
    def capacity(self) -> int:
        """Requests in flight across all instances before Cloud Run answers 429."""
        return self.max_concurrency * self.max_instances

    def deploy(self) -> Door:
        """What ``pulumi up`` would end with: the door, or ServiceNotReady when no revision can serve."""
        if self.image_problem:
            raise ServiceNotReady(f"service {self.service_name!r} never becomes ready: {self.image_problem}")
        return self


def image_problem(graph: Any, image: str | None) -> str | None:
    """Why the service's image cannot exist, or None.

    An image in an Artifact Registry repository this graph creates exists only if something in the
    graph pushes it: a Cloud Build resource (a dynamic resource with ``image``/``tag`` inputs) whose
    ``image`` is the repository path and whose output names the same digest. Cloud Run's
    ``build_config`` pushes nothing: it records how a Cloud Run function was built
    (GoogleCloudPlatform/terraform-google-cloud-run#398, hashicorp/terraform-provider-google#22263), so
    an image named there with no build resource never exists, and a revision whose image cannot be
    pulled never becomes ready. An image outside the graph's repositories (``image=``) is the user's
    word that it exists.
    """
    if not image:
        return "the container has no image (an output that nothing in the graph produced)"
    builds = [
        r for r in graph.resources if r.type.startswith(DYNAMIC_PREFIX) and "image" in r.inputs and "tag" in r.inputs
    ]
    repository, _, digest = image.partition("@")
    for build in builds:
        if build.inputs["image"] != repository:
            continue
        if not _DIGEST.fullmatch(digest):
            return f"image {image!r} is not the digest the build of {repository!r} pushed (no @sha256:...)"
        produced = build.outputs.get("image_digest_ref")
        if produced is not None and produced != image:
            return f"image {image!r} is not what build {build.name!r} produced ({produced!r})"
        return None
    repositories = [str(r.inputs.get("repositoryId")) for r in graph.resources if r.type == REPOSITORY_TYPE]
    for repo_id in repositories:
        path = repository.split("/")
        if len(path) >= 4 and path[0].endswith("-docker.pkg.dev") and path[2] == repo_id:
            return (
                f"image {image!r} is in repository {repo_id!r}, which this graph creates, but no build resource "
                "in the graph pushes it"
            )
    return None


def _seconds(value: Any) -> float:
    text = str(value)
    if not text.endswith("s"):
        raise ValueError(f"timeout {value!r} is not a duration in seconds like '300s'")
    return float(text[:-1])


def stripped(token: str) -> str:
    """The token as Cloud Run forwards it after checking it: the signature segment replaced.

    https://cloud.google.com/run/docs/troubleshooting#signature-removed (anchor cited by public code;
    the text itself is UNCONFIRMED in docs/platform-facts.md, fact 1).
    """
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.{SIGNATURE_REMOVED}"


def unverified_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@dataclass
class Refusal:
    status: int
    reason: str


class CloudRunFrontDoor:
    """ASGI app: Cloud Run's rules for ``door``, then ``upstream``. Counts what it did in ``refusals``."""

    def __init__(self, door: Door, upstream: ASGIApp, *, certs: CertsSource, clock_skew: int = 10) -> None:
        self.door = door
        self.upstream = upstream
        self.certs = certs
        self.clock_skew = clock_skew
        self.in_flight = 0
        self.peak_in_flight = 0
        self.refusals: list[Refusal] = []
        self.forwarded_authorization: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.upstream(scope, receive, send)  # lifespan: the container starting and stopping
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.decode("latin-1").lower() != ORIGIN_HEADER]
        origin = _header(scope, ORIGIN_HEADER) or "internet"
        if origin not in ORIGINS:
            raise ValueError(f"{ORIGIN_HEADER}: {origin!r} is not one of {ORIGINS}")
        refusal = self._admit(origin, _header(scope, "authorization"))
        if isinstance(refusal, Refusal):
            self.refusals.append(refusal)
            await _refuse(scope, receive, send, refusal)
            return
        if refusal is not None:  # the token Cloud Run checked, as the container receives it
            headers = [(k, v) for k, v in headers if k.lower() != b"authorization"]
            headers.append((b"authorization", f"Bearer {refusal}".encode("latin-1")))
        forwarded = {**scope, "headers": headers}
        self.forwarded_authorization.append(_header(forwarded, "authorization"))

        # https://cloud.google.com/run/docs/about-instance-autoscaling ("Exceeding maximum instances"):
        # with every instance at its concurrency limit, a request waits briefly, then "fails with a 429
        # error code". The wait is not modelled: beyond capacity the answer is 429 at once.
        if self.in_flight >= self.door.capacity:
            refusal_429 = Refusal(429, f"{self.in_flight} requests in flight, capacity {self.door.capacity}")
            self.refusals.append(refusal_429)
            await _refuse(scope, receive, send, refusal_429)
            return
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if scope["type"] == "websocket":
                # WebSockets are subject to the request timeout too
                # (https://cloud.google.com/run/docs/triggering/websockets); not modelled here.
                await self.upstream(forwarded, receive, send)
            else:
                await self._with_timeout(forwarded, receive, send)
        finally:
            self.in_flight -= 1

    def _admit(self, origin: str, authorization: str | None) -> Refusal | str | None:
        """A refusal, or the token to forward stripped of its signature, or None (forward as is)."""
        door = self.door
        if door.image_problem:
            # No ready revision: nothing serves. (Google's exact answer here is not modelled.)
            return Refusal(NOT_READY, f"service never became ready: {door.image_problem}")
        # https://cloud.google.com/run/docs/securing/ingress: "Internal" admits same-project Pub/Sub
        # (on the run.app URL) and the project's VPC networks; "Internal and Cloud Load Balancing" adds
        # load balancers (not modelled: no origin here is a load balancer); nothing from the internet.
        if door.ingress in (INGRESS_INTERNAL, INGRESS_INTERNAL_LB) and origin == "internet":
            return Refusal(INGRESS_REFUSED, f"ingress {door.ingress} refuses a request from the internet")
        if not door.iam_checked:
            # https://cloud.google.com/run/docs/authenticating/public: no invoker check, the request
            # (and any token in it) reaches the container unchanged.
            return None
        # https://cloud.google.com/run/docs/configuring/custom-audiences: an IAM-protected service needs
        # "a valid ID token that includes an audience (aud) claim matching" the run.app URL or a custom
        # audience; the caller must hold roles/run.invoker
        # (https://cloud.google.com/run/docs/securing/managing-access).
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Refusal(401, "no Bearer ID token on a request to an IAM-protected service")
        try:
            claims = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=dict(self.certs()), audience=list(door.audiences), clock_skew_in_seconds=self.clock_skew
            )
        except (ValueError, google_exceptions.GoogleAuthError) as exc:
            return Refusal(401, f"ID token refused: {exc}")
        if claims.get("iss") not in GOOGLE_ISSUERS:
            return Refusal(401, f"ID token issuer {claims.get('iss')!r} is not Google")
        email = claims.get("email")
        if not isinstance(email, str) or claims.get("email_verified") is not True:
            return Refusal(401, "ID token has no verified email")
        kind = "serviceAccount" if email.endswith(".gserviceaccount.com") else "user"
        if not ({f"{kind}:{email}", "allAuthenticatedUsers"} & door.invokers):
            return Refusal(403, f"{kind}:{email} does not hold {INVOKER_ROLE} on {door.service_name!r}")
        return stripped(token)

    async def _with_timeout(self, scope: Scope, receive: Receive, send: Send) -> None:
        # https://cloud.google.com/run/docs/configuring/request-timeout: "If your service doesn't respond
        # within this limit, Cloud Run closes the network connection and returns an HTTP 504 error."
        # ("The container might continue processing the aborted request": a handler thread may run on.)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.upstream(scope, receive, tracking_send), self.door.timeout)
        except TimeoutError:
            refusal = Refusal(504, f"no response within the request timeout of {self.door.timeout:g} s")
            self.refusals.append(refusal)
            if not started:
                await _refuse(scope, receive, send, refusal)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        # Closing before accepting: the client sees the handshake refused (HTTP 403 from an ASGI server).
        await send({"type": "websocket.close", "code": 1008, "reason": f"{refusal.status} {refusal.reason}"[:120]})
        return
    body = json.dumps({"error": refusal.reason, "front_door": refusal.status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""The image of a source deploy, really built: a Pulumi dynamic resource that runs Cloud Build.

``cloudrunv2.Service.build_config`` starts no build: it only records how a Cloud Run function was
built (GoogleCloudPlatform/terraform-google-cloud-run#398, hashicorp/terraform-provider-google#22263).
:class:`CloudBuildImage` submits a build of the uploaded archive (its root ``Dockerfile``) to Cloud
Build, waits for it, and outputs ``image_digest_ref`` (``{image}@sha256:...``): the service names
its image by digest, so it rolls a revision exactly when a new image was built.

Decisions:

- Transport: the Cloud Build REST API v1 through google-auth's ``AuthorizedSession`` (no client
  library dependency). The regional endpoint builds where the app runs.
- Diff: no change when project, region, bucket, object, image, tag and service account are all equal,
  so ``pulumi up`` of an unchanged app neither rebuilds nor rolls a revision; any change replaces
  (a new build, a new id). ``update`` rebuilds too, though replacement means it is not reached.
  A value not known yet (preview) counts as a change.
- ``read`` returns the stored state: a finished build never changes. ``delete`` does nothing: a build
  is history, and the pushed image stays in Artifact Registry (a cleanup policy there removes old ones).
- The wait is bounded (30 min by default, the build's own ``timeout`` too); at the bound the build is
  cancelled and the deploy fails. Polls back off from 2 s to 30 s; a transient HTTP error (429, 5xx)
  while polling is retried, any other fails the deploy with the status and Google's message.
- The provider is pickled (dill) into the resource's state: it holds only plain settings and makes its
  HTTP session inside ``create``. Its class is pickled by reference, so the Pulumi program's
  environment must have ``queuerun_gcp`` installed (it has: the program imports it).
- Failures raise :class:`queuerun.errors.BuildError` naming the build id, status, statusDetail and
  log URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol, cast

import pulumi
import pulumi.dynamic

from queuerun.errors import BuildError

CLOUD_BUILD_URL: Final = "https://cloudbuild.googleapis.com/v1"
DOCKER_BUILDER: Final = "gcr.io/cloud-builders/docker"
DEFAULT_MAX_WAIT: Final = 1800.0
# The type the engine (and a mock's new_resource) sees; not the generic "pulumi-python:dynamic:Resource",
# so previews and state name what the resource is.
RESOURCE_TYPE: Final = "pulumi-python:dynamic/queuerun:CloudBuildImage"
_SCOPES: Final = ("https://www.googleapis.com/auth/cloud-platform",)
_PENDING: Final = frozenset({"STATUS_UNKNOWN", "PENDING", "QUEUED", "WORKING"})
_TRANSIENT_HTTP: Final = frozenset({429, 500, 502, 503, 504})
_HTTP_TIMEOUT: Final = 60.0


class Response(Protocol):
    """What the provider reads of an HTTP response (``requests.Response`` fits)."""

    status_code: int
    text: str

    def json(self) -> Any: ...


class Session(Protocol):
    """What the provider calls on an HTTP session (``AuthorizedSession`` fits)."""

    def get(self, url: str, *, timeout: float) -> Response: ...

    def post(self, url: str, *, json: Any, timeout: float) -> Response: ...


def google_session() -> Session:
    """An HTTP session authorized with the application default credentials."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=list(_SCOPES))
    return cast(Session, AuthorizedSession(credentials))  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class BuildInputs:
    """What a build is made from; equal inputs, same image (the tag is the source digest)."""

    project: str
    region: str
    source_bucket: str
    source_object: str
    image: str
    """Repository path without tag, e.g. ``us-central1-docker.pkg.dev/P/REPO/app``."""
    tag: str
    service_account: str
    """Email of the service account the build runs as."""

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> BuildInputs:
        return cls(**{f.name: str(props[f.name]) for f in fields(cls)})

    @property
    def tagged(self) -> str:
        return f"{self.image}:{self.tag}"

    def builds_url(self, base_url: str) -> str:
        return f"{base_url}/projects/{self.project}/locations/{self.region}/builds"


INPUT_NAMES: Final = tuple(f.name for f in fields(BuildInputs))


def build_request(inputs: BuildInputs, *, timeout_seconds: int = int(DEFAULT_MAX_WAIT)) -> dict[str, Any]:
    """The Build resource to submit: ``docker build`` of the archive, pushed by Cloud Build."""
    return {
        # .zip is accepted: "This object must be a zipped (.zip) or gzipped archive file (.tar.gz)"
        # https://cloud.google.com/python/docs/reference/cloudbuild/latest/google.cloud.devtools.cloudbuild_v1.types.StorageSource
        "source": {"storageSource": {"bucket": inputs.source_bucket, "object": inputs.source_object}},
        "steps": [{"name": DOCKER_BUILDER, "args": ["build", "-t", inputs.tagged, "."]}],
        # Listed images are pushed after the steps and their digests reported in results.images.
        "images": [inputs.tagged],
        "serviceAccount": f"projects/{inputs.project}/serviceAccounts/{inputs.service_account}",
        # A user-specified service account cannot write to the default logs bucket: its logs must go to
        # Cloud Logging or a user-created bucket.
        # https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts
        "options": {"logging": "CLOUD_LOGGING_ONLY"},
        "timeout": f"{timeout_seconds}s",
    }


@dataclass(frozen=True)
class BuildState:
    """A Build resource, read: finished or not, and its image or why it failed."""

    build_id: str
    status: str
    done: bool
    image_digest_ref: str | None = None
    error: str | None = None


def interpret(build: Mapping[str, Any], inputs: BuildInputs) -> BuildState:
    """Read a Build resource (JSON) of ``inputs``: pending, succeeded with a digest ref, or failed."""
    build_id = str(build.get("id", "?"))
    status = str(build.get("status", "STATUS_UNKNOWN"))
    if status in _PENDING:
        return BuildState(build_id, status, done=False)
    if status == "SUCCESS":
        for image in (build.get("results") or {}).get("images") or []:
            digest = image.get("digest", "")
            if image.get("name") in (inputs.tagged, inputs.image) and digest.startswith("sha256:"):
                return BuildState(build_id, status, done=True, image_digest_ref=f"{inputs.image}@{digest}")
        error = f"Cloud Build build {build_id} succeeded but reported no digest for {inputs.tagged}"
        return BuildState(build_id, status, done=True, error=error)
    detail = build.get("statusDetail") or "no detail"
    logs = build.get("logUrl") or "no log URL"
    error = f"Cloud Build build {build_id} of {inputs.tagged} ended {status}: {detail}; logs: {logs}"
    return BuildState(build_id, status, done=True, error=error)


def changed_inputs(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """The inputs that differ; an unknown new value (preview) differs from any old one."""
    return [name for name in INPUT_NAMES if olds.get(name) != news.get(name)]


def poll_delays(first: float, ceiling: float, factor: float = 1.5) -> Callable[[], float]:
    """Successive waits between polls: ``first``, growing by ``factor`` up to ``ceiling``."""
    delay = first

    def next_delay() -> float:
        nonlocal delay
        current, delay = delay, min(delay * factor, ceiling)
        return current

    return next_delay


class CloudBuildProvider(pulumi.dynamic.ResourceProvider):
    """Creates :class:`CloudBuildImage`: submits the build and waits for its image."""

    def __init__(
        self,
        *,
        base_url: str = CLOUD_BUILD_URL,
        max_wait: float = DEFAULT_MAX_WAIT,
        first_poll: float = 2.0,
        max_poll: float = 30.0,
        session_factory: Callable[[], Session] | None = None,
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.max_wait = max_wait
        self.first_poll = first_poll
        self.max_poll = max_poll
        # None means google_session, looked up at create time: nothing live is pickled into the state.
        self.session_factory = session_factory

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.CheckResult:
        failures = [
            pulumi.dynamic.CheckFailure(name, f"{name} must be a non-empty string, got {news.get(name)!r}")
            for name in INPUT_NAMES
            if not isinstance(news.get(name), str) or not news[name]
        ]
        image = news.get("image")
        if isinstance(image, str) and ("@" in image or ":" in image.rsplit("/", 1)[-1]):
            failures.append(pulumi.dynamic.CheckFailure("image", f"image must have no tag or digest, got {image!r}"))
        return pulumi.dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = changed_inputs(olds, news)
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        inputs = BuildInputs.from_props(props)
        state = self.build(inputs)
        outs = {name: getattr(inputs, name) for name in INPUT_NAMES}
        outs.update(image_digest_ref=state.image_digest_ref, build_id=state.build_id)
        return pulumi.dynamic.CreateResult(id_=state.build_id, outs=outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=self.create(news).outs)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        return pulumi.dynamic.ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    def build(self, inputs: BuildInputs) -> BuildState:
        """Submit the build of ``inputs`` and wait for it; raise BuildError unless it pushed the image."""
        session = (self.session_factory or google_session)()
        builds_url = inputs.builds_url(self.base_url)
        body = build_request(inputs, timeout_seconds=int(self.max_wait))
        operation = _json(session.post(builds_url, json=body, timeout=_HTTP_TIMEOUT), f"POST {builds_url}")
        submitted = (operation.get("metadata") or {}).get("build") or {}
        if not submitted.get("id"):
            raise BuildError(f"Cloud Build answered POST {builds_url} without a build id: {operation!r}")
        state = interpret(submitted, inputs)
        deadline = time.monotonic() + self.max_wait
        next_delay = poll_delays(self.first_poll, self.max_poll)
        while not state.done:
            delay = next_delay()
            if time.monotonic() + delay > deadline:
                cancelled = _cancel(session, f"{builds_url}/{state.build_id}:cancel")
                raise BuildError(
                    f"Cloud Build build {state.build_id} of {inputs.tagged} still {state.status} after "
                    f"{self.max_wait:.0f} s: " + ("cancelled" if cancelled else "could not cancel it")
                )
            time.sleep(delay)
            response = session.get(f"{builds_url}/{state.build_id}", timeout=_HTTP_TIMEOUT)
            if response.status_code in _TRANSIENT_HTTP:
                continue
            state = interpret(_json(response, f"GET build {state.build_id}"), inputs)
        if state.error:
            raise BuildError(state.error)
        return state


def _cancel(session: Session, url: str) -> bool:
    # Best effort: the build's own timeout stops it anyway.
    try:
        return session.post(url, json={}, timeout=_HTTP_TIMEOUT).status_code < 400
    except Exception:
        return False


def _json(response: Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except Exception:  # an unreadable error body: show its start instead
            message = response.text[:500]
        raise BuildError(f"Cloud Build {what}: HTTP {response.status_code}: {message}")
    body: dict[str, Any] = response.json()
    return body


class CloudBuildImage(pulumi.dynamic.Resource, module="queuerun", name="CloudBuildImage"):
    """The image Cloud Build builds from a source archive in GCS, pushed to Artifact Registry.

    Its type is :data:`RESOURCE_TYPE`; see the module docstring for when it builds.
    """

    image_digest_ref: pulumi.Output[str]
    """``{image}@sha256:...``: the pushed image, by digest."""
    build_id: pulumi.Output[str]
    """The id of the Cloud Build build that made it."""

    def __init__(
        self,
        resource_name: str,
        *,
        project: pulumi.Input[str],
        region: pulumi.Input[str],
        source_bucket: pulumi.Input[str],
        source_object: pulumi.Input[str],
        image: pulumi.Input[str],
        tag: pulumi.Input[str],
        service_account: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
        provider: CloudBuildProvider | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "project": project,
            "region": region,
            "source_bucket": source_bucket,
            "source_object": source_object,
            "image": image,
            "tag": tag,
            "service_account": service_account,
            # Outputs must be named in the props for the SDK to expose them as attributes.
            "image_digest_ref": None,
            "build_id": None,
        }
        super().__init__(provider or CloudBuildProvider(), resource_name, props, opts)

"""CloudBuildImage builds the source image with Cloud Build and names it by digest.

Cloud Build has no emulator: the provider is tested against a fake of its REST API (submit a build,
read it back) served on 127.0.0.1, which plays a scripted list of statuses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pulumi
import pytest
import requests

from queuerun.errors import BuildError
from queuerun_gcp.build import (
    RESOURCE_TYPE,
    BuildInputs,
    CloudBuildImage,
    CloudBuildProvider,
    build_request,
    interpret,
    poll_delays,
)

from .support import Mocks, build

DIGEST = "sha256:" + "ab" * 32
PROPS = {
    "project": "p1",
    "region": "europe-west1",
    "source_bucket": "shop-queuerun-src-1234abcd",
    "source_object": "source-0123456789abcdef.zip",
    "image": "europe-west1-docker.pkg.dev/p1/shop/app",
    "tag": "0123456789abcdef",
    "service_account": "shop-build@p1.iam.gserviceaccount.com",
}
INPUTS = BuildInputs(**PROPS)
TAGGED = f"{INPUTS.image}:{INPUTS.tag}"


def a_build(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "b-42",
        "status": status,
        "logUrl": "https://console.cloud.google.com/cloud-build/builds/b-42",
    } | extra


def succeeded(name: str = TAGGED, digest: str = DIGEST) -> dict[str, Any]:
    return a_build("SUCCESS", results={"images": [{"name": name, "digest": digest}]})


# --- the request --------------------------------------------------------------------------------------


def test_the_request_builds_the_archive_with_docker_and_pushes_the_tagged_image() -> None:
    body = build_request(INPUTS, timeout_seconds=600)
    assert body["source"] == {"storageSource": {"bucket": INPUTS.source_bucket, "object": INPUTS.source_object}}
    assert body["steps"] == [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "-t", TAGGED, "."]}]
    assert body["images"] == [TAGGED]
    assert body["timeout"] == "600s"


def test_the_request_runs_as_the_given_service_account_logging_to_cloud_logging_only() -> None:
    body = build_request(INPUTS)
    assert body["serviceAccount"] == "projects/p1/serviceAccounts/shop-build@p1.iam.gserviceaccount.com"
    assert body["options"] == {"logging": "CLOUD_LOGGING_ONLY"}


# --- reading a build ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["QUEUED", "WORKING", "PENDING", "STATUS_UNKNOWN"])
def test_a_build_still_running_is_not_done(status: str) -> None:
    state = interpret(a_build(status), INPUTS)
    assert (state.done, state.build_id, state.image_digest_ref, state.error) == (False, "b-42", None, None)


def test_a_successful_build_gives_the_image_by_digest() -> None:
    state = interpret(succeeded(), INPUTS)
    assert (state.done, state.error) == (True, None)
    assert state.image_digest_ref == f"{INPUTS.image}@{DIGEST}"


def test_a_successful_build_without_the_images_digest_is_an_error() -> None:
    state = interpret(succeeded(name="elsewhere/other:tag"), INPUTS)
    assert state.done and state.image_digest_ref is None
    assert state.error and "b-42" in state.error and "no digest" in state.error


@pytest.mark.parametrize("status", ["FAILURE", "TIMEOUT", "CANCELLED", "INTERNAL_ERROR", "EXPIRED"])
def test_a_failed_build_names_its_id_status_detail_and_logs(status: str) -> None:
    state = interpret(a_build(status, statusDetail="Build step 0 exited 1"), INPUTS)
    assert state.done and state.image_digest_ref is None and state.error
    for part in ("b-42", status, "Build step 0 exited 1", "https://console.cloud.google.com/cloud-build/builds/b-42"):
        assert part in state.error


def test_polls_back_off_up_to_a_ceiling() -> None:
    delay = poll_delays(2.0, 5.0)
    assert [delay() for _ in range(5)] == [2.0, 3.0, 4.5, 5.0, 5.0]


# --- the provider against a fake Cloud Build ------------------------------------------------------------


@dataclass
class FakeCloudBuild:
    """Answers builds.create with an Operation, then builds.get with the next scripted Build."""

    script: list[dict[str, Any]]
    created: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    fail_create: tuple[int, str] | None = None
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path.endswith(":cancel"):
                    fake.cancels.append(self.path)
                    return self._send(200, {})
                fake.created.append((self.path, body))
                if fake.fail_create:
                    status, message = fake.fail_create
                    return self._send(status, {"error": {"code": status, "message": message}})
                build = {"id": "b-42", "status": "QUEUED"}
                return self._send(
                    200, {"name": "projects/p1/locations/europe-west1/operations/op-1", "metadata": {"build": build}}
                )

            def do_GET(self) -> None:
                fake.gets.append(self.path)
                if len(fake.script) > 1:
                    return self._send(200, fake.script.pop(0))
                return self._send(200, fake.script[0])

        return Handler


@pytest.fixture
def fake() -> Iterator[FakeCloudBuild]:
    cloud_build = FakeCloudBuild(script=[a_build("WORKING"), succeeded()])
    server = ThreadingHTTPServer(("127.0.0.1", 0), cloud_build.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cloud_build.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield cloud_build
    finally:
        server.shutdown()
        server.server_close()


def provider_for(fake: FakeCloudBuild, max_wait: float = 10.0) -> CloudBuildProvider:
    return CloudBuildProvider(
        base_url=fake.url, max_wait=max_wait, first_poll=0.01, max_poll=0.05, session_factory=requests.Session
    )


def test_create_submits_the_build_and_returns_the_image_once_it_succeeds(fake: FakeCloudBuild) -> None:
    fake.script = [a_build("WORKING"), a_build("WORKING"), succeeded()]
    result = provider_for(fake).create(dict(PROPS))
    ((path, body),) = fake.created
    assert path == "/v1/projects/p1/locations/europe-west1/builds"
    assert body == build_request(INPUTS, timeout_seconds=10)
    assert fake.gets == ["/v1/projects/p1/locations/europe-west1/builds/b-42"] * 3
    assert result.id == "b-42"
    assert result.outs == PROPS | {"image_digest_ref": f"{INPUTS.image}@{DIGEST}", "build_id": "b-42"}


def test_a_failed_build_fails_create_with_its_id_and_status(fake: FakeCloudBuild) -> None:
    fake.script = [a_build("WORKING"), a_build("FAILURE", statusDetail="step 0 exited 1")]
    with pytest.raises(BuildError) as caught:
        provider_for(fake).create(dict(PROPS))
    assert "build b-42" in str(caught.value) and "ended FAILURE: step 0 exited 1" in str(caught.value)


def test_a_refused_submission_fails_create_with_googles_message(fake: FakeCloudBuild) -> None:
    fake.fail_create = (403, "Permission 'cloudbuild.builds.create' denied")
    with pytest.raises(BuildError, match=r"HTTP 403: Permission 'cloudbuild.builds.create' denied"):
        provider_for(fake).create(dict(PROPS))
    assert fake.gets == []


def test_a_build_that_outlasts_the_wait_is_cancelled_and_fails(fake: FakeCloudBuild) -> None:
    fake.script = [a_build("WORKING")]
    with pytest.raises(BuildError, match=r"build b-42 .* still WORKING after 0 s: cancelled"):
        provider_for(fake, max_wait=0.2).create(dict(PROPS))
    assert fake.cancels == ["/v1/projects/p1/locations/europe-west1/builds/b-42:cancel"]


def test_identical_inputs_are_no_change_so_no_rebuild() -> None:
    olds = PROPS | {"image_digest_ref": f"{INPUTS.image}@{DIGEST}", "build_id": "b-42", "__provider": "old"}
    news = PROPS | {"__provider": "new"}
    diff = CloudBuildProvider().diff("b-42", olds, news)
    assert (diff.changes, diff.replaces) == (False, [])


@pytest.mark.parametrize("name", ["tag", "source_object", "service_account", "region"])
def test_a_changed_input_replaces_the_image(name: str) -> None:
    diff = CloudBuildProvider().diff("b-42", dict(PROPS), PROPS | {name: "changed"})
    assert (diff.changes, diff.replaces) == (True, [name])


def test_check_refuses_empty_inputs_and_an_image_with_a_tag() -> None:
    result = CloudBuildProvider().check({}, PROPS | {"tag": "", "image": TAGGED})
    assert sorted(f.property for f in result.failures) == ["image", "tag"]


# --- under Pulumi mocks ----------------------------------------------------------------------------------


def test_the_resource_registers_its_inputs_and_a_picklable_provider() -> None:
    g = build(lambda: CloudBuildImage("shop-image", **PROPS))
    res = g.named("shop-image")
    assert res.type == RESOURCE_TYPE == "pulumi-python:dynamic/queuerun:CloudBuildImage"
    assert {k: v for k, v in res.inputs.items() if k != "__provider"} == PROPS
    assert res.inputs["__provider"]  # the dill-serialized provider


class BuiltMocks(Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, state = super().new_resource(args)
        if args.typ == RESOURCE_TYPE:
            return "b-7", state | {"image_digest_ref": f"{state['image']}@{DIGEST}", "build_id": "b-7"}
        return rid, state


def test_the_digest_ref_and_build_id_are_outputs() -> None:
    pulumi.runtime.set_mocks(BuiltMocks(), project="queuerun", stack="test", preview=False)
    seen: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[None]:
        image = CloudBuildImage("shop-image", **PROPS)
        return pulumi.Output.all(image.image_digest_ref, image.build_id).apply(lambda v: seen.update(outs=v))

    program()
    assert seen["outs"] == [f"{INPUTS.image}@{DIGEST}", "b-7"]

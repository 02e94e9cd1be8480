"""The examples' deployments, rehearsed: Cloud Run's front door, read from each Pulumi graph, in front of
the real push server on the emulators, fed by Pub/Sub pushes of jobs the runtime really published.

What this catches that the graph tests cannot: an image nothing builds (the service never becomes
ready), a push audience Cloud Run's IAM layer does not admit, a push server that refuses the token
Cloud Run forwards (signature removed). What it cannot show is in README ("What the rehearsal
proves"): the door is our reading of Google's documentation, not Google.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib
import json
import runpy
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from front_door import (
    INGRESS_ALL,
    INGRESS_INTERNAL,
    INGRESS_REFUSED,
    ORIGIN_HEADER,
    SIGNATURE_REMOVED,
    CloudRunFrontDoor,
    Door,
    ServiceNotReady,
)
from infra.support import build
from infra.test_infra_program import EXAMPLES, program_app, program_graph
from rehearsal import Google, Rehearsal, push_targets
from starlette.testclient import TestClient

from queuerun import App
from queuerun.settings import ENV

# -- the examples -----------------------------------------------------------------------------------


def graph_of(example: str) -> Any:
    return program_graph(EXAMPLES[example])


def door_of(example: str, graph: Any | None = None) -> Door:
    graph = graph if graph is not None else graph_of(example)
    (service,) = graph.of_type("cloudrunv2/service:Service")
    return Door.from_graph(graph, service.name)


@dataclass(frozen=True)
class Job:
    """A job of an example pushed with the app's own queue, and the handler's effect to look for."""

    queue: str
    push: Callable[[App, str], str]
    """(app, unique tag) -> job id"""
    done: Callable[[str, pytest.CaptureFixture[str]], bool]
    """(unique tag, capsys) -> whether the handler ran on that job"""


def _module(name: str) -> Any:
    return importlib.import_module(name)


JOBS: dict[str, Job] = {
    # emails prints a line per job sent.
    "quickstart": Job(
        "emails",
        lambda app, tag: app.queues("emails").push({"to": f"{tag}@example.com", "subject": "Welcome"}),
        lambda tag, capsys: f"sent 'Welcome' to {tag}@example.com" in capsys.readouterr().out,
    ),
    # charge.fifo records the charge with the gateway.
    "checkout": Job(
        "charge.fifo",
        lambda app, tag: (
            app.queues("charge.fifo")
            .group(tag)
            .dedupe(tag)
            .push(_module("examples.checkout.app").Order(tag, 4999, "ada@example.com"))
        ),
        lambda tag, _: (tag, 4999) in _module("examples.checkout.app").gateway.charges,
    ),
    # sync_profile.fifo writes the profile to the CRM (and the other services).
    "profile_sync": Job(
        "sync_profile.fifo",
        lambda app, tag: (
            app.queues("sync_profile.fifo")
            .group(tag)
            .push(_module("examples.profile_sync.app").ProfileChange(tag, f"{tag}@example.com", "Ada"))
        ),
        lambda tag, _: (
            _module("examples.profile_sync.services").crm.records.get(tag, {}).get("email") == f"{tag}@example.com"
        ),
    ),
    # deliver adds the batch's recipients to the delivered set.
    "fanout": Job(
        "deliver",
        lambda app, tag: app.queues("deliver").push({"subject": "News", "to": [f"{tag}@example.com"], "batch": 0}),
        lambda tag, _: f"{tag}@example.com" in _module("examples.fanout.app").delivered,
    ),
}

# Its handler only speaks to the user's WebSocket: rehearsed with the page's own WebSocket below.
REHEARSED_ELSEWHERE = {"order_status": "test_order_status_a_browser_websocket_through_the_door_hears_its_pushed_job"}

examples = pytest.mark.parametrize("example", list(EXAMPLES), ids=list(EXAMPLES))


def unique_tag() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rehearse(emulator_env: dict[str, str], google: Google) -> Callable[..., Any]:
    """``with rehearse(example, door=None, graph=None, env_overrides=None) as r``: the example deployed."""

    def start(
        example: str, *, door: Door | None = None, graph: Any = None, env_overrides: dict[str, str] | None = None
    ) -> Any:
        graph = graph if graph is not None else graph_of(example)
        return Rehearsal.start(
            graph, door or door_of(example, graph), program_app(graph), emulator_env, google, env_overrides
        )

    return start


# -- a push of a real job through the door ----------------------------------------------------------


def test_every_example_is_pushed_through_the_door_here_or_elsewhere() -> None:
    assert set(EXAMPLES) == set(JOBS) | set(REHEARSED_ELSEWHERE)


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e not in REHEARSED_ELSEWHERE])
def test_a_published_job_pushed_through_the_door_runs_its_handler_and_is_acked(
    example: str, rehearse: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    if example not in JOBS:
        pytest.fail(f"example {example!r} has a Pulumi program but no job to rehearse: add it to JOBS")
    job, tag = JOBS[example], unique_tag()
    with rehearse(example) as r:
        job_id = job.push(r.app, tag)

        # profile_sync's help desk fails its first call on purpose: Pub/Sub pushes the job again.
        response = r.deliver(job.queue, job_id, attempts=3)

        assert response.status_code == 204, response.text  # an ack on Pub/Sub and on its emulator
        assert r.front.refusals == []
    assert job.done(tag, capsys), f"{example}: the {job.queue} handler did not run job {job_id}"


# -- fault 2: the push audience must be one Cloud Run admits ----------------------------------------


@examples
def test_every_push_subscription_is_admitted_by_its_service(example: str) -> None:
    """Each push subscription's OIDC audience is one Cloud Run's IAM layer accepts, and its service
    account holds roles/run.invoker (https://cloud.google.com/run/docs/configuring/custom-audiences)."""
    graph = graph_of(example)
    door = door_of(example, graph)
    targets = push_targets(graph)
    assert targets, f"{example}: no push subscription"
    for queue, target in targets.items():
        assert target.endpoint.startswith(door.url + "/"), f"{queue}: pushes to {target.endpoint}, not {door.url}"
        if door.iam_checked:
            assert target.audience in door.audiences, f"{queue}: audience {target.audience!r} not in {door.audiences}"
            assert f"serviceAccount:{target.service_account}" in door.invokers, queue


def test_without_the_custom_audience_cloud_run_refuses_every_push(rehearse: Callable[..., Any]) -> None:
    """Fault 2: the subscriptions' audience ``queuerun:<project>:<app>`` not declared on the service."""
    door = dataclasses.replace(door_of("quickstart"), custom_audiences=())
    assert door.iam_checked
    job, tag = JOBS["quickstart"], unique_tag()
    with rehearse("quickstart", door=door) as r:
        response = r.deliver(job.queue, job.push(r.app, tag))

        assert response.status_code == 401
        assert response.json()["front_door"] == 401  # refused by Cloud Run, before the container
        assert r.front.forwarded_authorization == []


def test_a_token_for_the_run_app_url_is_admitted_too(rehearse: Callable[..., Any]) -> None:
    """The door's audience rule, both ways: the run.app URL stays an accepted audience."""
    job, tag = JOBS["fanout"], unique_tag()
    with rehearse("fanout") as r:
        response = r.deliver(job.queue, job.push(r.app, tag), audience=r.door.url)

    # Cloud Run admits it; the push server then checks the audience the subscription was given.
    assert response.status_code == 401
    assert "front_door" not in response.json()
    assert "audience" in response.json()["error"]


# -- fault 3: the push server must accept what Cloud Run forwards -----------------------------------


def test_behind_cloud_run_iam_the_push_server_sees_the_signature_removed(rehearse: Callable[..., Any]) -> None:
    job, tag = JOBS["fanout"], unique_tag()
    with rehearse("fanout") as r:
        assert r.door.iam_checked
        response = r.deliver(job.queue, job.push(r.app, tag))

        assert response.status_code == 204, response.text
        (forwarded,) = r.front.forwarded_authorization
        assert forwarded is not None and forwarded.endswith("." + SIGNATURE_REMOVED)


def test_a_push_server_that_re_verifies_signatures_refuses_every_push_behind_cloud_run_iam(
    rehearse: Callable[..., Any],
) -> None:
    """Fault 3: ``QUEUERUN_PUSH_AUTH=verify`` behind an IAM-protected door."""
    job, tag = JOBS["fanout"], unique_tag()
    with rehearse("fanout", env_overrides={ENV.PUSH_AUTH: "verify"}) as r:
        response = r.deliver(job.queue, job.push(r.app, tag))

        assert response.status_code == 401
        assert "front_door" not in response.json()  # Cloud Run let it through; the container refused it
        assert SIGNATURE_REMOVED in response.json()["error"]
    assert f"{tag}@example.com" not in _module("examples.fanout.app").delivered


# -- fault 1: an image nothing builds ---------------------------------------------------------------


@examples
def test_the_service_image_is_one_the_graph_builds_or_is_given(example: str) -> None:
    door = door_of(example)
    assert door.deploy() is door, door.image_problem


@examples
def test_a_graph_with_no_build_of_its_image_never_becomes_ready(example: str) -> None:
    """Fault 1: ``build_config`` records a build and starts none; take the build resources away and the
    image in the graph's own repository is pushed by nothing."""
    graph = graph_of(example)
    builds = [r for r in graph.resources if r.type.startswith("pulumi-python:dynamic")]
    assert builds, f"{example}: a source deploy with no build resource"
    unbuilt = dataclasses.replace(graph, resources=[r for r in graph.resources if r not in builds])

    door = door_of(example, unbuilt)

    with pytest.raises(ServiceNotReady, match="no build resource"):
        door.deploy()
    with TestClient(CloudRunFrontDoor(door, _stub_ok, certs=dict)) as client:
        assert client.get("/_health", headers={ORIGIN_HEADER: "vpc"}).status_code == 503


def test_a_given_image_outside_the_graph_is_taken_as_it_is() -> None:
    example_image = "us-docker.pkg.dev/cloudrun/container/hello"
    program = EXAMPLES["quickstart"].program_dir / "__main__.py"
    saved = list(sys.path)
    try:
        graph = build(lambda: runpy.run_path(str(program), run_name="__main__"), {"quickstart:image": example_image})
    finally:
        sys.path[:] = saved
        sys.modules.pop("app", None)  # the quickstart imports its app.py as a top-level module

    door = door_of("quickstart", graph)

    assert door.image == example_image
    assert door.deploy() is door


# -- what browsers get ------------------------------------------------------------------------------


def http_queue(example: str) -> str | None:
    app = program_app(graph_of(example))
    return next((spec.name for spec in app.specs if spec.http is True), None)


# The examples that declare an HTTP queue (a test below keeps this list true).
HTTP_EXAMPLES = ("checkout", "profile_sync", "order_status")


def test_the_http_examples_are_exactly_those_with_an_http_queue() -> None:
    assert {e for e in EXAMPLES if http_queue(e) is not None} == set(HTTP_EXAMPLES)


@pytest.mark.parametrize("example", HTTP_EXAMPLES)
def test_a_browser_post_to_an_http_queue_gets_what_the_door_allows(example: str, rehearse: Callable[..., Any]) -> None:
    queue = http_queue(example)
    assert queue is not None
    tag = unique_tag()
    with rehearse(example) as r:
        response = r.client.post(
            f"/queues/{queue}/{tag}/{tag}" if queue.endswith(".fifo") else f"/queues/{queue}",
            json=_browser_payload(example, tag),
            headers={ORIGIN_HEADER: "internet", **_browser_sign_in(example, tag)},
        )
        door = r.door
    if door.ingress == INGRESS_INTERNAL:
        assert response.status_code == INGRESS_REFUSED and response.json()["front_door"] == INGRESS_REFUSED
    elif door.iam_checked:
        assert response.status_code == 401 and response.json()["front_door"] == 401
    else:
        assert door.ingress == INGRESS_ALL
        assert response.status_code == 202, response.text  # reached the server, queued
        assert response.headers.get("x-job-id")


def _browser_sign_in(example: str, tag: str) -> dict[str, str]:
    """What the example's page sends to sign in: order_status's queue is not public, checkout's is."""
    return {"authorization": f"Bearer demo-{tag}"} if example == "order_status" else {}


def test_an_anonymous_post_to_a_queue_not_declared_public_is_refused_by_the_server(
    rehearse: Callable[..., Any],
) -> None:
    """order_status is a public service, its ``orders`` queue is not ``public=True``: Cloud Run lets the
    anonymous post through, the runtime refuses it before any job exists."""
    with rehearse("order_status") as r:
        response = r.client.post("/queues/orders", json={"id": unique_tag()}, headers={ORIGIN_HEADER: "internet"})
    assert response.status_code == 401
    assert "front_door" not in response.json()  # the container, not Cloud Run, refused it
    assert "'orders' is not public" in response.json()["error"]


WEB_BACKEND = "web@example-project.iam.gserviceaccount.com"  # profile_sync's docstring: grant it run.invoker


def test_behind_cloud_run_iam_an_invoker_is_the_jobs_user(rehearse: Callable[..., Any]) -> None:
    """profile_sync (access="iam"): Cloud Run admits the web backend's ID token and forwards it with its
    signature removed; the runtime takes the invoker's email as the user instead of refusing an
    anonymous request, and the job carries it."""
    door = door_of("profile_sync")
    door = dataclasses.replace(door, invokers=door.invokers | {f"serviceAccount:{WEB_BACKEND}"})
    tag = unique_tag()
    with rehearse("profile_sync", door=door) as r:
        token = r.google.id_token(audience=door.url, email=WEB_BACKEND)
        response = r.client.post(
            f"/queues/sync_profile.fifo/{tag}",
            json=_browser_payload("profile_sync", tag),
            headers={ORIGIN_HEADER: "internet", "authorization": f"Bearer {token}"},
        )
        assert response.status_code == 202, response.text
        message = r.pull("sync_profile.fifo", response.headers["x-job-id"])
    assert message.attributes["qr-user"] == WEB_BACKEND


def test_on_a_public_service_a_token_with_its_signature_removed_is_nobody(rehearse: Callable[..., Any]) -> None:
    """checkout is public: nothing checked a token, so one written to look checked is not believed."""
    forged = f"{_segment({'alg': 'RS256'})}.{_segment({'email': 'ceo@example.com', 'email_verified': True})}"
    tag = unique_tag()
    with rehearse("checkout") as r:
        assert not r.door.iam_checked
        response = r.client.post(
            f"/queues/charge.fifo/{tag}/{tag}",
            json=_browser_payload("checkout", tag),
            headers={ORIGIN_HEADER: "internet", "authorization": f"Bearer {forged}.{SIGNATURE_REMOVED}"},
        )
        assert response.status_code == 202, response.text  # charge.fifo is public: anonymous is fine
        message = r.pull("charge.fifo", response.headers["x-job-id"])
    assert "qr-user" not in message.attributes


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _browser_payload(example: str, tag: str) -> dict[str, Any]:
    if example == "checkout":
        return {"order_id": tag, "cents": 100, "email": "ada@example.com"}
    if example == "profile_sync":
        return {"user_id": tag, "email": f"{tag}@example.com", "name": "Ada"}
    return {"id": tag}


@pytest.mark.parametrize("example", ["quickstart", "fanout"])
def test_internal_ingress_admits_pubsub_and_refuses_the_internet(example: str, rehearse: Callable[..., Any]) -> None:
    door = door_of(example)
    if door.ingress != INGRESS_INTERNAL:
        pytest.fail(f"{example} has no HTTP queue and is expected to be internal, got {door.ingress}")
    job = JOBS[example]
    with rehearse(example) as r:
        job_id = job.push(r.app, unique_tag())
        body = json.dumps(r.envelope(job.queue, r.pull(job.queue, job_id)))
        headers = r.push_headers(job.queue)

        from_internet = r.client.post(
            r.targets[job.queue].path, content=body, headers={**headers, ORIGIN_HEADER: "internet"}
        )
        from_pubsub = r.client.post(r.targets[job.queue].path, content=body, headers=headers)

    assert from_internet.status_code == INGRESS_REFUSED
    assert from_pubsub.status_code == 204


def test_order_status_a_browser_websocket_through_the_door_hears_its_pushed_job(rehearse: Callable[..., Any]) -> None:
    """The public example end to end: the page's WebSocket and HTTP post come from the internet, the job
    comes back from Pub/Sub through the door, and its ``socket.send`` reaches the page."""
    tag = unique_tag()
    with rehearse("order_status") as r:
        assert not r.door.iam_checked and r.door.ingress == INGRESS_ALL
        with r.client.websocket_connect(f"/_ws?token=demo-{tag}", headers={ORIGIN_HEADER: "internet"}) as ws:
            posted = r.client.post(
                "/queues/orders",
                json={"id": tag},
                headers={ORIGIN_HEADER: "internet", "authorization": f"Bearer demo-{tag}"},
            )
            assert posted.status_code == 202, posted.text

            response = r.deliver("orders", posted.headers["x-job-id"])

            assert response.status_code == 204, response.text
            statuses = [ws.receive_json()["status"] for _ in range(3)]
    assert statuses == ["preparing", "packaging", "shipped"]


# -- the door's own rules, with a stand-in container ------------------------------------------------


async def _stub_ok(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _public(door: Door) -> Door:
    """The door as a public, deployable service: these tests are about the door's other rules."""
    return dataclasses.replace(door, ingress=INGRESS_ALL, invoker_iam_disabled=True, image_problem=None)


def test_a_request_past_the_request_timeout_gets_504() -> None:
    """https://cloud.google.com/run/docs/configuring/request-timeout"""
    door = dataclasses.replace(_public(door_of("quickstart")), timeout=0.2)
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()

    front = CloudRunFrontDoor(door, slow, certs=dict)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url=door.url) as client:
            return await asyncio.wait_for(client.get("/slow", headers={ORIGIN_HEADER: "internet"}), 5)

    response = asyncio.run(call())

    assert response.status_code == 504
    assert front.in_flight == 0


def test_beyond_concurrency_times_instances_requests_get_429() -> None:
    """https://cloud.google.com/run/docs/about-instance-autoscaling ("Exceeding maximum instances")"""
    door = dataclasses.replace(_public(door_of("quickstart")), max_concurrency=2, max_instances=2)
    assert door.capacity == 4

    async def scenario() -> list[int]:
        release, entered = asyncio.Event(), asyncio.Semaphore(0)

        async def held(scope: Any, receive: Any, send: Any) -> None:
            entered.release()
            await release.wait()
            await _stub_ok(scope, receive, send)

        front = CloudRunFrontDoor(door, held, certs=dict)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url=door.url) as client:
            first = [asyncio.create_task(client.get("/", headers={ORIGIN_HEADER: "internet"})) for _ in range(4)]
            for _ in range(4):
                await asyncio.wait_for(entered.acquire(), 5)  # all four in flight
            over = await client.get("/", headers={ORIGIN_HEADER: "internet"})
            release.set()
            return [over.status_code, *[(await t).status_code for t in first]]

    assert asyncio.run(scenario()) == [429, 200, 200, 200, 200]


def test_an_iam_protected_door_refuses_missing_wrong_and_unauthorized_tokens(google: Google) -> None:
    door = dataclasses.replace(door_of("quickstart"), image_problem=None)
    audience = door.custom_audiences[0]
    push_sa = next(m for m in door.invokers).removeprefix("serviceAccount:")
    other = "intruder@test-project.iam.gserviceaccount.com"
    forged = Google().id_token(audience=audience, email=push_sa)
    cases = {
        "no token": (None, 401),
        "wrong audience": (google.id_token(audience="https://elsewhere.example", email=push_sa), 401),
        "another key": (forged, 401),
        "not an invoker": (google.id_token(audience=audience, email=other), 403),
        "the push account": (google.id_token(audience=audience, email=push_sa), 200),
    }
    with TestClient(CloudRunFrontDoor(door, _stub_ok, certs=google.certs)) as client:
        got = {
            name: client.get(
                "/", headers={ORIGIN_HEADER: "vpc", **({"authorization": f"Bearer {token}"} if token else {})}
            ).status_code
            for name, (token, _) in cases.items()
        }
    assert got == {name: status for name, (_, status) in cases.items()}


# -- WebSockets -------------------------------------------------------------------------------------


def test_a_websocket_from_the_internet_is_refused_by_internal_ingress(rehearse: Callable[..., Any]) -> None:
    from starlette.websockets import WebSocketDisconnect

    with rehearse("quickstart") as r:
        assert r.door.ingress == INGRESS_INTERNAL
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            r.client.websocket_connect("/_ws", headers={ORIGIN_HEADER: "internet"}),
        ):
            pass
    assert refused.value.code == 1008

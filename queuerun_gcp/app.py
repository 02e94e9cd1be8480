"""QueueRunApp: one queuerun application on Google Cloud, provisioned from its queue declarations."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from queuerun import names
from queuerun.errors import ConfigurationError, QueueNotFoundError
from queuerun.settings import ENV
from queuerun.spec import QueueSpec
from queuerun.topology import SubscriptionSettings, duration, subscription_settings

from . import iam, reachability
from .args import FIELD_NAMES, QueueRunAppArgs
from .build import CloudBuildImage
from .constants import (
    BUILD_ACCOUNT_SUFFIX,
    CONTAINER_PORT,
    DEAD_LETTER_RETENTION,
    NEVER_EXPIRE,
    PUSH_ACCOUNT_SUFFIX,
    REQUIRED_APIS,
    RUNTIME_ACCOUNT_SUFFIX,
    SOURCE_BUILD_APIS,
    TTL_COLLECTIONS,
    TTL_FIELD,
    TYPE_TOKEN,
    firestore_database_id,
    push_audience,
    source_bucket_name,
)
from .source import SourceBundle
from .user_key import UserKey
from .validation import default_request_timeout, known, resolve
from .worker_pool import pull_specs, worker_pool


@dataclass(frozen=True)
class QueueResources:
    """The Pub/Sub resources of one queue."""

    topic: gcp.pubsub.Topic
    subscription: gcp.pubsub.Subscription
    dead_letter_topic: gcp.pubsub.Topic
    dead_letter_subscription: gcp.pubsub.Subscription


def _merge_args(args: QueueRunAppArgs | None, kwargs: Mapping[str, Any]) -> QueueRunAppArgs:
    unknown = sorted(set(kwargs) - FIELD_NAMES)
    if unknown:
        raise ConfigurationError(
            f"QueueRunApp: unknown arguments {unknown!r}; valid arguments are {sorted(FIELD_NAMES)!r}"
        )
    if args is None:
        return QueueRunAppArgs(**kwargs)
    return dataclasses.replace(args, **kwargs)


def pubsub_endpoint(region: str) -> str:
    """The locational Pub/Sub endpoint of ``region``: ordering keys are ordered only within one region
    (cloud.google.com/pubsub/docs/ordering)."""
    return f"{region}-pubsub.googleapis.com:443"


def operator_env(project: str, database: str, region: str, app_target: str) -> dict[str, str]:
    """The settings a ``queuerun`` command needs to act on the deployed app (``--env-file``)."""
    return {
        ENV.BACKEND: "gcp",
        ENV.PROJECT: project,
        ENV.FIRESTORE_DATABASE: database,
        ENV.PUBSUB_ENDPOINT: pubsub_endpoint(region),
        ENV.APP: app_target,
    }


def _seconds(value: Any) -> pulumi.Input[str]:
    """A protobuf Duration string ("10s", "0.5s"), through an Output when the value is not known yet."""
    if known(value):
        return duration(value)
    return pulumi.Output.from_input(value).apply(duration)


# Requests an instance takes beyond its push queues' job slots: HTTP endpoints, WebSockets, health
# checks (Cloud Run's own default per-instance concurrency).
REQUEST_HEADROOM = 80
MAX_REQUEST_CONCURRENCY = 1000  # Cloud Run's ceiling (cloud.google.com/run/docs/about-concurrency)


def default_container_concurrency(specs: tuple[QueueSpec, ...]) -> pulumi.Input[int]:
    """Room on one instance for every push queue's ``concurrency`` jobs at once, plus the headroom.

    The push server turns away (429) a push beyond its queue's ``concurrency``: sizing the instance's
    request concurrency to the sum lets Cloud Run send more to another instance instead (it routes by
    requests in flight per instance: cloud.google.com/run/docs/about-concurrency).
    """
    slots = [s.concurrency for s in specs if s.delivery == "push"]

    def total(values: list[int]) -> int:
        return min(MAX_REQUEST_CONCURRENCY, sum(values) + REQUEST_HEADROOM)

    if all(known(v) for v in slots):
        return total(slots)
    return pulumi.Output.all(*slots).apply(total)


def _settings(app: str, spec: QueueSpec) -> SubscriptionSettings | pulumi.Output[SubscriptionSettings]:
    """The runtime's projection of ``spec`` (the emulator topology uses the same), through an Output
    while some option is not known yet."""
    options = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    if all(known(v) for v in options.values()):
        return subscription_settings(app, spec)
    return pulumi.Output.all(**options).apply(
        lambda values: subscription_settings(app, dataclasses.replace(spec, **values))
    )


def _field(settings: SubscriptionSettings | pulumi.Output[SubscriptionSettings], name: str) -> Any:
    if isinstance(settings, SubscriptionSettings):
        return getattr(settings, name)
    return settings.apply(lambda s: getattr(s, name))


class QueueRunApp(pulumi.ComponentResource):
    """Topics, subscriptions, dead letters, the Cloud Run service, Firestore and IAM of one app.

    ``QueueRunApp("shop", app=app, source="app_dir", region="us-central1")``; keyword arguments are
    the fields of :class:`QueueRunAppArgs` (they override ``args`` when both are given). Raises
    ``ConfigurationError`` listing every problem before any resource is registered.
    """

    url: pulumi.Output[str]
    service_name: pulumi.Output[str]
    topics: dict[str, pulumi.Output[str]]
    subscriptions: dict[str, pulumi.Output[str]]
    dead_letter_topics: dict[str, pulumi.Output[str]]
    dead_letter_subscriptions: dict[str, pulumi.Output[str]]
    runtime_service_account_email: pulumi.Output[str]
    push_service_account_email: pulumi.Output[str]
    push_audience: pulumi.Output[str]
    firestore_database: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: QueueRunAppArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.args = _merge_args(args, kwargs)
        resolved = resolve(self.args, name)
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._name = name
        self.app_name: str = resolved.app_name
        self.specs: tuple[QueueSpec, ...] = resolved.specs
        self._bundle = resolved.bundle
        a = self.args
        app = self.app_name

        region: pulumi.Input[str] = a.region if a.region is not None else pulumi.Config("gcp").require("region")
        project_info = gcp.organizations.get_project_output(
            project_id=a.project, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        project_id: pulumi.Output[str] = (
            pulumi.Output.from_input(a.project) if a.project is not None else project_info.project_id
        )
        self._project = a.project
        self._labels = {"managed-by": "queuerun", "queuerun-app": app, **a.labels}
        self._door = reachability.door(a.access, invoker_iam_disabled=a.invoker_iam_disabled)
        self.warnings: list[str] = []
        apis = self._api_resources = self._apis()
        # Every resource waits for the APIs: on a fresh project none of them is on.
        self._child = pulumi.ResourceOptions(parent=self, depends_on=apis)
        # What holds jobs or state: with deletion protection, `pulumi destroy` stops before deleting any.
        self._kept = pulumi.ResourceOptions(parent=self, depends_on=apis, protect=a.deletion_protection)

        self.runtime_account = gcp.serviceaccount.Account(
            f"{name}-runtime",
            account_id=f"{app}{RUNTIME_ACCOUNT_SUFFIX}",
            display_name=f"queuerun {app}: runtime",
            description="Runs the app's Cloud Run service: publishes jobs, uses Firestore",
            project=a.project,
            opts=self._child,
        )
        self.push_account = gcp.serviceaccount.Account(
            f"{name}-push",
            account_id=f"{app}{PUSH_ACCOUNT_SUFFIX}",
            display_name=f"queuerun {app}: Pub/Sub push",
            description="Identity of Pub/Sub push requests to the app's service (OIDC)",
            project=a.project,
            opts=self._child,
        )
        audience = project_id.apply(lambda p: push_audience(p, app))
        # The Pub/Sub service agent may not exist right after the API is enabled; this creates it (or
        # returns it) so the grants below never name a missing account.
        self.pubsub_agent = gcp.projects.ServiceIdentity(
            f"{name}-pubsub-agent", service="pubsub.googleapis.com", project=a.project, opts=self._child
        )
        agent = self.pubsub_agent.member

        database_name = self._firestore(region)
        user_key_env = self._user_key()
        self.service = self._service(region, project_id, audience, database_name, user_key_env)

        self.queue_resources: dict[str, QueueResources] = {}
        for spec in self.specs:
            self.queue_resources[spec.name] = self._queue(spec, audience)

        self._bindings(project_id, database_name, agent)
        # Pull queues are consumed by `queuerun worker` in a Cloud Run worker pool (see worker_pool.py).
        self.worker_pool = (
            worker_pool(
                f"{name}-worker",
                name=f"{app}-worker",
                region=region,
                project=a.project,
                image=self._image,
                env=self._env,
                secret_env={ENV.USER_KEY: user_key_env.value_source.secret_key_ref},  # type: ignore[union-attr]
                service_account=self.runtime_account.email,
                instances=a.worker_instances,
                max_instances=a.worker_max_instances,
                cpu=a.cpu,
                memory=a.memory,
                labels=self._labels,
                deletion_protection=a.deletion_protection,
                # Cloud Run refuses a revision whose account cannot read its secrets: the grant comes first.
                opts=pulumi.ResourceOptions.merge(
                    self._child, pulumi.ResourceOptions(depends_on=[self._user_key_reader])
                ),
            )
            if pull_specs(self.specs)
            else None
        )
        for warning in reachability.warnings(a.access, self.specs, websockets=a.websockets):
            self._warn(warning)

        self.url = self.service.uri
        self.service_name = self.service.name
        self.topics = {q: r.topic.name for q, r in self.queue_resources.items()}
        self.subscriptions = {q: r.subscription.name for q, r in self.queue_resources.items()}
        self.dead_letter_topics = {q: r.dead_letter_topic.name for q, r in self.queue_resources.items()}
        self.dead_letter_subscriptions = {q: r.dead_letter_subscription.name for q, r in self.queue_resources.items()}
        self.runtime_service_account_email = self.runtime_account.email
        self.push_service_account_email = self.push_account.email
        self.push_audience = audience
        self.firestore_database = pulumi.Output.from_input(database_name)
        self.queuerun_env = pulumi.Output.all(project_id, database_name, region, a.app_target).apply(
            lambda values: operator_env(*values)
        )
        self.register_outputs(
            {
                "url": self.url,
                "service_name": self.service_name,
                "topics": self.topics,
                "subscriptions": self.subscriptions,
                "dead_letter_topics": self.dead_letter_topics,
                "dead_letter_subscriptions": self.dead_letter_subscriptions,
                "runtime_service_account_email": self.runtime_service_account_email,
                "push_service_account_email": self.push_service_account_email,
                "push_audience": self.push_audience,
                "firestore_database": self.firestore_database,
                "queuerun_env": self.queuerun_env,
            }
        )

    # --- building blocks ---------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        pulumi.log.warn(f"QueueRunApp {self._name!r}: {message}", resource=self)

    def _apis(self) -> list[pulumi.Resource]:
        wanted = REQUIRED_APIS + (SOURCE_BUILD_APIS if self.args.source is not None else ())
        if not self.args.enable_apis:
            self._warn(reachability.api_warning(wanted))
            return []
        return [
            gcp.projects.Service(
                f"{self._name}-api-{api.split('.')[0]}",
                service=api,
                project=self._project,
                # Other stacks may rely on the API: destroying this app must never turn it off.
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in wanted
        ]

    def _firestore(self, region: pulumi.Input[str]) -> pulumi.Input[str]:
        a = self.args
        database_name: pulumi.Input[str]
        if a.firestore_database is not None:
            database_name = a.firestore_database
        else:
            database = gcp.firestore.Database(
                f"{self._name}-firestore",
                name=firestore_database_id(self.app_name),
                location_id=a.firestore_location if a.firestore_location is not None else region,
                type="FIRESTORE_NATIVE",
                delete_protection_state=(
                    "DELETE_PROTECTION_ENABLED" if a.deletion_protection else "DELETE_PROTECTION_DISABLED"
                ),
                # The provider's default (ABANDON) would leave the database behind on destroy.
                deletion_policy="ABANDON" if a.deletion_protection else "DELETE",
                project=self._project,
                opts=self._kept,
            )
            database_name = database.name
        if a.firestore_ttl:
            for collection in TTL_COLLECTIONS:
                gcp.firestore.Field(
                    f"{self._name}-ttl-{collection.replace('_', '-')}",
                    project=self._project,
                    database=database_name,
                    collection=collection,
                    field=TTL_FIELD,
                    ttl_config=gcp.firestore.FieldTtlConfigArgs(),
                    # Records are read by id only; an index on a growing timestamp would be a write hotspot.
                    index_config=gcp.firestore.FieldIndexConfigArgs(),
                    opts=self._child,
                )
        return database_name

    def _source_build(self, bundle: SourceBundle, region: pulumi.Input[str], project_id: pulumi.Output[str]) -> Any:
        """Upload the archive, build it with Cloud Build as the build account, and return the image by digest.

        ``cloudrunv2.Service.build_config`` is not used: it records how a Cloud Run function was built and
        starts no build (GoogleCloudPlatform/terraform-google-cloud-run#398), so the image would never exist.
        """
        a, app = self.args, self.app_name
        bucket = gcp.storage.Bucket(
            f"{self._name}-source",
            name=project_id.apply(lambda p: source_bucket_name(app, p)),
            location=region,
            project=self._project,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            force_destroy=not a.deletion_protection,
            labels=self._labels,
            opts=self._kept,
        )
        digest = bundle.digest()
        # The object name carries the content hash: an unchanged app uploads nothing, builds nothing and
        # rolls no revision; any change to the app, the runtime or a generated file builds a new image.
        archive = gcp.storage.BucketObject(
            f"{self._name}-source-archive",
            bucket=bucket.name,
            name=f"source-{digest}.zip",
            source=bundle.archive(),
            opts=self._child,
        )
        repository = gcp.artifactregistry.Repository(
            f"{self._name}-images",
            repository_id=f"{app}-queuerun",
            format="DOCKER",
            location=region,
            description=f"Images built from the source of queuerun app {app}",
            project=self._project,
            labels=self._labels,
            opts=self._child,
        )
        builder = gcp.serviceaccount.Account(
            f"{self._name}-build",
            account_id=f"{app}{BUILD_ACCOUNT_SUFFIX}",
            display_name=f"queuerun {app}: source builds",
            description="Runs the Cloud Build builds of the app's source: reads the archive, pushes the image",
            project=a.project,
            opts=self._child,
        )
        # A build with a user-specified account must log to Cloud Logging (or a bucket of one's own), which
        # needs logWriter; that role exists only at project level
        # (cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts).
        grants = [
            gcp.projects.IAMMember(
                f"{self._name}-build-logs",
                project=project_id,
                role=iam.LOG_WRITER,
                member=builder.member,
                opts=self._child,
            ),
            gcp.storage.BucketIAMMember(
                f"{self._name}-build-source-reader",
                bucket=bucket.name,
                role=iam.OBJECT_VIEWER,
                member=builder.member,
                opts=self._child,
            ),
            gcp.artifactregistry.RepositoryIamMember(
                f"{self._name}-build-image-writer",
                repository=repository.repository_id,
                location=repository.location,
                project=repository.project,
                role=iam.ARTIFACT_WRITER,
                member=builder.member,
                opts=self._child,
            ),
        ]
        image = CloudBuildImage(
            f"{self._name}-image",
            project=project_id,
            region=region,
            source_bucket=bucket.name,
            source_object=archive.name,
            image=pulumi.Output.concat(region, "-docker.pkg.dev/", project_id, "/", repository.repository_id, "/", app),
            tag=digest,
            service_account=builder.email,
            # Built only once the build account may read the archive, push the image and write logs.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._api_resources, *grants]),
        )
        return image.image_digest_ref

    def _user_key(self) -> gcp.cloudrunv2.ServiceTemplateContainerEnvArgs:
        """The app's user key (``QUEUERUN_USER_KEY``, see ``queuerun.user_seal``) in Secret Manager.

        Only the runtime account may read it (``roles/secretmanager.secretAccessor`` on this secret, nothing
        project-wide): no publisher can seal a job's user. Cloud Run resolves a secret environment variable
        at instance start and checks at deploy that the service's account can read it; Google recommends a
        pinned version there (https://cloud.google.com/run/docs/configuring/secrets), hence the version's
        number and the service waiting for the grant.
        """
        n, app = self._name, self.app_name
        key = UserKey(f"{n}-user-key-value", opts=self._kept)  # losing it strips the user of every job in flight
        self.user_key_secret = gcp.secretmanager.Secret(
            f"{n}-user-key",
            secret_id=f"{app}-user-key",
            replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
            labels=self._labels,
            project=self._project,
            opts=self._kept,
        )
        version = gcp.secretmanager.SecretVersion(
            f"{n}-user-key-version", secret=self.user_key_secret.id, secret_data=key.key, opts=self._kept
        )
        self._user_key_reader = gcp.secretmanager.SecretIamMember(
            f"{n}-user-key-runtime-accessor",
            secret_id=self.user_key_secret.id,
            role=iam.SECRET_ACCESSOR,
            member=self.runtime_account.member,
            project=self._project,
            opts=self._child,
        )
        return gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(
            name=ENV.USER_KEY,
            value_source=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceArgs(
                secret_key_ref=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                    secret=self.user_key_secret.secret_id, version=version.version
                )
            ),
        )

    def _service(
        self,
        region: pulumi.Input[str],
        project_id: pulumi.Output[str],
        audience: pulumi.Output[str],
        database_name: pulumi.Input[str],
        user_key_env: gcp.cloudrunv2.ServiceTemplateContainerEnvArgs,
    ) -> gcp.cloudrunv2.Service:
        a, door = self.args, self._door
        image: pulumi.Input[str]
        if self._bundle is not None:
            image = self._source_build(self._bundle, region, project_id)
        elif a.image is not None:
            image = a.image
        else:  # unreachable: validation requires exactly one of source and image
            raise ConfigurationError(f"QueueRunApp {self._name!r}: give source= or image=")
        managed: dict[str, pulumi.Input[str]] = {
            ENV.BACKEND: "gcp",
            ENV.PROJECT: project_id,
            ENV.APP: a.app_target,
            ENV.PUSH_AUDIENCE: audience,
            ENV.PUSH_SERVICE_ACCOUNT: self.push_account.email,
            ENV.PUSH_AUTH: door.push_auth,
            ENV.FIRESTORE_DATABASE: database_name,
            # Ordering keys are only ordered when every publish goes to one region.
            ENV.PUBSUB_ENDPOINT: pulumi.Output.from_input(region).apply(pubsub_endpoint),
        }
        if a.allowed_origins:
            managed[ENV.ALLOWED_ORIGINS] = ",".join(a.allowed_origins)
        env = self._env = {**a.env, **managed}
        self._image = image
        request_timeout = a.request_timeout if a.request_timeout is not None else default_request_timeout(self.specs)
        return gcp.cloudrunv2.Service(
            f"{self._name}-service",
            name=self.app_name,
            location=region,
            project=self._project,
            ingress=door.ingress,
            # Cloud Run admits an ID token only if its audience is the run.app URL or a declared custom
            # audience (cloud.google.com/run/docs/configuring/custom-audiences); the subscriptions cannot
            # use the URL, an output of this very resource, so they use this fixed audience.
            custom_audiences=[audience],
            invoker_iam_disabled=door.invoker_iam_disabled,
            deletion_protection=a.deletion_protection,
            labels=self._labels,
            template=gcp.cloudrunv2.ServiceTemplateArgs(
                service_account=self.runtime_account.email,
                timeout=_seconds(request_timeout),
                max_instance_request_concurrency=(
                    a.container_concurrency
                    if a.container_concurrency is not None
                    else default_container_concurrency(self.specs)
                ),
                scaling=gcp.cloudrunv2.ServiceTemplateScalingArgs(
                    min_instance_count=a.min_instances,
                    max_instance_count=a.max_instances,
                ),
                containers=[
                    gcp.cloudrunv2.ServiceTemplateContainerArgs(
                        image=image,
                        envs=[
                            *(
                                gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(name=key, value=env[key])
                                for key in sorted(env)
                                if key != ENV.USER_KEY  # the secret's, never a plain value
                            ),
                            user_key_env,
                        ],
                        ports=gcp.cloudrunv2.ServiceTemplateContainerPortsArgs(container_port=CONTAINER_PORT),
                        resources=gcp.cloudrunv2.ServiceTemplateContainerResourcesArgs(
                            limits={"cpu": a.cpu, "memory": a.memory},
                            cpu_idle=True,
                            startup_cpu_boost=True,
                        ),
                    )
                ],
            ),
            # Cloud Run refuses a revision whose account cannot read its secrets: the grant comes first.
            opts=pulumi.ResourceOptions.merge(self._kept, pulumi.ResourceOptions(depends_on=[self._user_key_reader])),
        )

    def _queue(self, spec: QueueSpec, audience: pulumi.Output[str]) -> QueueResources:
        app, prefix = self.app_name, f"{self._name}-{names.resource_slug(spec.name)}"
        # Names, ordering and the push route follow from the queue's name, which is always known.
        settings = subscription_settings(app, QueueSpec(name=spec.name, delivery=spec.delivery))
        s = _settings(app, spec)
        topic = gcp.pubsub.Topic(
            f"{prefix}-topic",
            name=settings.topic_id,
            project=self._project,
            labels=self._labels,
            opts=self._kept,
        )
        dead_letter_topic = gcp.pubsub.Topic(
            f"{prefix}-dlq",
            name=settings.dead_letter_topic_id,
            project=self._project,
            labels=self._labels,
            opts=self._kept,
        )
        # A topic without a subscription drops what is published to it: dead letters need one.
        dead_letter_subscription = gcp.pubsub.Subscription(
            f"{prefix}-dlq-sub",
            name=settings.dead_letter_subscription_id,
            topic=dead_letter_topic.id,
            ack_deadline_seconds=settings.dead_letter_ack_deadline_seconds,
            message_retention_duration=DEAD_LETTER_RETENTION,
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=NEVER_EXPIRE),
            project=self._project,
            labels=self._labels,
            opts=self._kept,
        )
        push_config = None
        if settings.push_route is not None:
            push_config = gcp.pubsub.SubscriptionPushConfigArgs(
                push_endpoint=pulumi.Output.concat(self.service.uri, settings.push_route),
                oidc_token=gcp.pubsub.SubscriptionPushConfigOidcTokenArgs(
                    service_account_email=self.push_account.email,
                    audience=audience,
                ),
            )
        subscription = gcp.pubsub.Subscription(
            f"{prefix}-sub",
            name=settings.subscription_id,
            topic=topic.id,
            ack_deadline_seconds=_field(s, "ack_deadline_seconds"),
            enable_message_ordering=settings.enable_message_ordering,
            enable_exactly_once_delivery=_field(s, "enable_exactly_once_delivery"),
            retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(
                minimum_backoff=_seconds(_field(s, "minimum_backoff")),
                maximum_backoff=_seconds(_field(s, "maximum_backoff")),
            ),
            dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                dead_letter_topic=dead_letter_topic.id,
                max_delivery_attempts=_field(s, "max_delivery_attempts"),
            ),
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=NEVER_EXPIRE),
            push_config=push_config,
            project=self._project,
            labels=self._labels,
            opts=self._kept,
        )
        return QueueResources(topic, subscription, dead_letter_topic, dead_letter_subscription)

    def _bindings(
        self, project_id: pulumi.Output[str], database_name: pulumi.Input[str], agent: pulumi.Input[str]
    ) -> None:
        n = self._name
        runtime, push = self.runtime_account.member, self.push_account.member
        for spec in self.specs:
            r, prefix = self.queue_resources[spec.name], f"{n}-{names.resource_slug(spec.name)}"
            self._topic_member(f"{prefix}-runtime-publisher", r.topic, iam.PUBLISHER, runtime)
            # The push server dead-letters a job itself on its last attempt (and a payload that
            # fails validation at once), with the job's id and error.
            self._topic_member(f"{prefix}-runtime-dlq-publisher", r.dead_letter_topic, iam.PUBLISHER, runtime)
            self._topic_member(f"{prefix}-agent-dlq-publisher", r.dead_letter_topic, iam.PUBLISHER, agent)
            self._subscription_member(f"{prefix}-agent-subscriber", r.subscription, iam.SUBSCRIBER, agent)
            if spec.delivery == "pull":
                self._subscription_member(f"{prefix}-runtime-subscriber", r.subscription, iam.SUBSCRIBER, runtime)
        gcp.serviceaccount.IAMMember(
            f"{n}-agent-token-creator",
            service_account_id=self.push_account.name,
            role=iam.TOKEN_CREATOR,
            member=agent,
            opts=self._child,
        )
        self._invoker(f"{n}-push-invoker", push)
        if self._door.all_users_invoker:
            self._invoker(f"{n}-public-invoker", iam.ALL_USERS)
        gcp.projects.IAMMember(
            f"{n}-runtime-datastore",
            project=project_id,
            role=iam.DATASTORE_USER,
            member=runtime,
            condition=iam.database_condition(project_id, database_name),
            opts=self._child,
        )

    def _topic_member(
        self, resource_name: str, topic: gcp.pubsub.Topic, role: str, member: pulumi.Input[str]
    ) -> gcp.pubsub.TopicIAMMember:
        return gcp.pubsub.TopicIAMMember(
            resource_name, topic=topic.name, role=role, member=member, project=self._project, opts=self._child
        )

    def _subscription_member(
        self, resource_name: str, subscription: gcp.pubsub.Subscription, role: str, member: pulumi.Input[str]
    ) -> gcp.pubsub.SubscriptionIAMMember:
        return gcp.pubsub.SubscriptionIAMMember(
            resource_name,
            subscription=subscription.name,
            role=role,
            member=member,
            project=self._project,
            opts=self._child,
        )

    def _invoker(self, resource_name: str, member: pulumi.Input[str]) -> gcp.cloudrunv2.ServiceIamMember:
        return gcp.cloudrunv2.ServiceIamMember(
            resource_name,
            name=self.service.name,
            location=self.service.location,
            project=self.service.project,
            role=iam.RUN_INVOKER,
            member=member,
            opts=self._child,
        )

    # --- grants for other identities -----------------------------------------------------------------

    def _select(self, queue: str | None) -> list[tuple[str, QueueResources]]:
        if queue is None:
            return list(self.queue_resources.items())
        if queue not in self.queue_resources:
            raise QueueNotFoundError(queue, list(self.queue_resources))
        return [(queue, self.queue_resources[queue])]

    def grant_publish(
        self, member: pulumi.Input[str], queue: str | None = None, *, name: str | None = None
    ) -> list[gcp.pubsub.TopicIAMMember]:
        """Let ``member`` push jobs: grants ``roles/pubsub.publisher`` on the topic of ``queue``
        (of every queue when None). ``name`` labels the grant; required when ``member`` is an Output."""
        label = iam.member_label(member, name)
        return [
            self._topic_member(f"{self._name}-{names.resource_slug(q)}-publish-{label}", r.topic, iam.PUBLISHER, member)
            for q, r in self._select(queue)
        ]

    def grant_invoke(self, member: pulumi.Input[str], *, name: str | None = None) -> gcp.cloudrunv2.ServiceIamMember:
        """Let ``member`` call the HTTP queue endpoints: grants ``roles/run.invoker`` on this service only."""
        return self._invoker(f"{self._name}-invoke-{iam.member_label(member, name)}", member)

    def grant_dead_letters(
        self, member: pulumi.Input[str], queue: str | None = None, *, name: str | None = None
    ) -> list[gcp.pubsub.SubscriptionIAMMember]:
        """Let ``member`` list and take dead letters: grants ``roles/pubsub.subscriber`` on the dead-letter
        subscription of ``queue`` (of every queue when None). Replaying also needs :meth:`grant_publish`."""
        label = iam.member_label(member, name)
        return [
            self._subscription_member(
                f"{self._name}-{names.resource_slug(q)}-dead-letters-{label}",
                r.dead_letter_subscription,
                iam.SUBSCRIBER,
                member,
            )
            for q, r in self._select(queue)
        ]

"""The Cloud Run worker pool that consumes an app's ``delivery="pull"`` queues (``queuerun worker``).

A worker pool runs long-lived instances with no URL and no requests: the fit for streaming pull
(cloud.google.com/run/docs/deploy-worker-pools). It runs the app's image with the service's
environment, as the runtime service account, which holds ``roles/pubsub.subscriber`` on the pull
subscriptions only (granted with the queues, in ``QueueRunApp._bindings``), publisher on the
dead-letter topics and Firestore use; nothing else.

Scaling: by default manual, ``worker_instances`` instances (Cloud Run's default for a worker pool
is manual scaling with 1 instance; every requested instance is billed as active:
cloud.google.com/run/docs/configuring/workerpools/manual-scaling). With ``worker_max_instances``,
CPU autoscaling between ``worker_instances`` and that maximum (``scaling_mode="AUTOMATIC"``:
cloud.google.com/run/docs/configuring/workerpools/cpu-autoscaling). Each instance runs up to a
queue's ``concurrency`` jobs of that queue at once, so the fleet-wide bound is instances x concurrency.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pulumi
import pulumi_gcp as gcp

from queuerun.spec import QueueSpec, whole_number_problem

# What the worker-pool container runs instead of the image's server (QUEUERUN_APP names the app).
WORKER_COMMAND: Final = ("python", "-m", "queuerun.cli", "worker")
MAX_WORKER_INSTANCES: Final = 1000


def pull_specs(specs: tuple[QueueSpec, ...]) -> tuple[QueueSpec, ...]:
    return tuple(s for s in specs if s.delivery == "pull")


def worker_instances_problem(value: Any, known: bool = True) -> str | None:
    if not known:
        return None
    problem = whole_number_problem(value, 1, MAX_WORKER_INSTANCES)
    return f"worker_instances {problem}" if problem else None


def worker_max_instances_problem(value: Any, low: Any) -> str | None:
    if value is None:
        return None
    problem = whole_number_problem(value, 1, MAX_WORKER_INSTANCES)
    if problem is None and isinstance(low, int) and not isinstance(low, bool) and value < low:
        problem = f"must be at least worker_instances ({low}), got {value!r}"
    return f"worker_max_instances {problem}" if problem else None


def scaling(
    instances: pulumi.Input[int], max_instances: pulumi.Input[int] | None
) -> gcp.cloudrunv2.WorkerPoolScalingArgs:
    if max_instances is None:
        return gcp.cloudrunv2.WorkerPoolScalingArgs(scaling_mode="MANUAL", manual_instance_count=instances)
    return gcp.cloudrunv2.WorkerPoolScalingArgs(
        scaling_mode="AUTOMATIC", min_instance_count=instances, max_instance_count=max_instances
    )


def worker_pool(
    resource_name: str,
    *,
    name: str,
    region: pulumi.Input[str],
    project: str | None,
    image: pulumi.Input[str],
    env: Mapping[str, pulumi.Input[str]],
    secret_env: Mapping[str, Any],
    service_account: pulumi.Input[str],
    instances: pulumi.Input[int],
    max_instances: pulumi.Input[int] | None,
    cpu: pulumi.Input[str],
    memory: pulumi.Input[str],
    labels: Mapping[str, str],
    deletion_protection: bool,
    opts: pulumi.ResourceOptions,
) -> gcp.cloudrunv2.WorkerPool:
    """The worker pool running ``queuerun worker`` on ``image``.

    ``secret_env``: variables resolved from Secret Manager (name -> the service's ``secret_key_ref``),
    the same as the service's: the worker decodes and pushes jobs as the service does.
    """
    return gcp.cloudrunv2.WorkerPool(
        resource_name,
        name=name,
        location=region,
        project=project,
        deletion_protection=deletion_protection,
        labels=dict(labels),
        scaling=scaling(instances, max_instances),
        template=gcp.cloudrunv2.WorkerPoolTemplateArgs(
            service_account=service_account,
            containers=[
                gcp.cloudrunv2.WorkerPoolTemplateContainerArgs(
                    image=image,
                    commands=list(WORKER_COMMAND),
                    envs=[
                        *(
                            gcp.cloudrunv2.WorkerPoolTemplateContainerEnvArgs(name=k, value=env[k])
                            for k in sorted(env)
                            if k not in secret_env  # a secret's, never a plain value
                        ),
                        *(
                            gcp.cloudrunv2.WorkerPoolTemplateContainerEnvArgs(
                                name=k,
                                value_source=gcp.cloudrunv2.WorkerPoolTemplateContainerEnvValueSourceArgs(
                                    secret_key_ref=gcp.cloudrunv2.WorkerPoolTemplateContainerEnvValueSourceSecretKeyRefArgs(
                                        secret=ref.secret, version=ref.version
                                    )
                                ),
                            )
                            for k, ref in sorted(secret_env.items())
                        ),
                    ],
                    resources=gcp.cloudrunv2.WorkerPoolTemplateContainerResourcesArgs(
                        limits={"cpu": cpu, "memory": memory}
                    ),
                )
            ],
        ),
        opts=opts,
    )

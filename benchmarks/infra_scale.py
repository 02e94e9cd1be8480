"""How long QueueRunApp takes to build an N-queue app under Pulumi mocks, and how many resources it registers.

    .venv/bin/python benchmarks/infra_scale.py [--queues 200] [--repeat 3]

No Pulumi CLI, engine or cloud is involved: this measures the component's own cost (validation and
resource registration through the real pulumi and pulumi-gcp SDKs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pulumi

from queuerun.spec import QueueSpec, make_spec
from queuerun_gcp import QueueRunApp


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.count = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.count += 1
        state = dict(args.inputs)
        if args.typ == "gcp:serviceaccount/account:Account":
            email = f"{state['accountId']}@bench.iam.gserviceaccount.com"
            state.update(email=email, member=f"serviceAccount:{email}", name=f"projects/bench/serviceAccounts/{email}")
        elif args.typ == "gcp:cloudrunv2/service:Service":
            state["uri"] = f"https://{state['name']}-bench.a.run.app"
        return f"{args.name}_id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return ({"number": "1", "projectId": "bench"} if args.token.endswith("getProject") else {}), []


@dataclass(frozen=True)
class _App:
    name: str
    specs: tuple[QueueSpec, ...]


def run_once(queues: int) -> tuple[float, int]:
    specs = tuple(make_spec(f"q{i:04d}.fifo" if i % 3 == 0 else f"q{i:04d}", http=i % 10 == 0) for i in range(queues))
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="bench", stack="bench", preview=False)

    @pulumi.runtime.test
    def program() -> None:
        QueueRunApp("bench", app=_App("bench", specs), image="gcr.io/bench/app:1", region="us-central1")

    started = time.perf_counter()
    program()
    return time.perf_counter() - started, mocks.count  # the component included


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queues", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    run_once(3)  # warm-up: pulumi_gcp loads its sub-modules lazily on first use
    times = []
    count = 0
    for _ in range(opts.repeat):
        elapsed, count = run_once(opts.queues)
        times.append(elapsed)
    print(
        f"queues={opts.queues} resources={count} "
        f"median={statistics.median(times):.2f}s min={min(times):.2f}s max={max(times):.2f}s "
        f"per_resource={statistics.median(times) / count * 1000:.2f}ms"
    )


if __name__ == "__main__":
    main()

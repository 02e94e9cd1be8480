"""The app's user key (``QUEUERUN_USER_KEY``): random bytes made once, kept in Pulumi state as a secret.

The runtime seals each job's user with it (``queuerun.user_seal``), so only holders of the key (the
runtime service account, reading it from Secret Manager) can say who a job is for. The key is made on
create and never changes: a new key on every ``pulumi up`` would strip the user of every job in flight.
Rotate it by replacing the resource (``pulumi up --replace``); jobs sealed with the old key then run
without a user.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import pulumi
import pulumi.dynamic

RESOURCE_TYPE: Final = "pulumi-python:dynamic/queuerun:UserKey"
KEY_BYTES: Final = 48  # 64 characters of base64url: over the runtime's 32-byte minimum


class UserKeyProvider(pulumi.dynamic.ResourceProvider):
    """Makes the key on create; nothing about it ever needs an update."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=secrets.token_hex(8), outs={"key": secrets.token_urlsafe(KEY_BYTES)})

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        return pulumi.dynamic.DiffResult(changes=False)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        return pulumi.dynamic.ReadResult(id_, props)


class UserKey(pulumi.dynamic.Resource, module="queuerun", name="UserKey"):
    """The user key of one app; ``key`` is a secret output."""

    key: pulumi.Output[str]

    def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["key"])
        super().__init__(UserKeyProvider(), resource_name, {"key": None}, pulumi.ResourceOptions.merge(opts, secret))

"""Tests of the queuerun_gcp Pulumi components, under pulumi.runtime.set_mocks."""

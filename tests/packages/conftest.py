"""The package tests use the catalogue tests' fixtures: a synced catalogue, a private
mirror to damage, a served folder."""

from tests.targets.conftest import own_mirror, refused_url, served, synced

__all__ = ["own_mirror", "refused_url", "served", "synced"]

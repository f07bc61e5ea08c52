"""Shared helpers for the chart tests: load the chart once, render values,
split the output into Kubernetes objects.

Helm runs in-process through helm-python-sdk (Helm's Go SDK); no helm binary,
cluster or kubeconfig is involved.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "faceid-gateway"
RELEASE = "fg"
NAMESPACE = "faceid"
FULLNAME = f"{RELEASE}-faceid-gateway"
NOTES = "faceid-gateway/templates/NOTES.txt"

# Distinctive fake key material: the tests assert it appears only in a Secret.
FAKE_SECRET_ID = "AKIDfakeQ7x3ZpL9mW2vN8kR4tY6"
FAKE_SECRET_KEY = "fakeKey-Zq81Xw0vUt7sRr5pQo3n"
FAKE_SESSION_TOKEN = "fakeToken-Hj4Kl6Mn8Pq0Rs2Tu"
FAKE_REDIS_PASSWORD = "fakeRedisPw-Bc5De7Fg9"

# image.repository has no default (no image is published): every rendering
# names one, as every install must.
IMAGE_REPOSITORY = "registry.example.com/faceid-gateway"
BASE_VALUES = {"image": {"repository": IMAGE_REPOSITORY}}

INLINE_KEYS = {
    "secretId": FAKE_SECRET_ID,
    "secretKey": FAKE_SECRET_KEY,
    "sessionToken": FAKE_SESSION_TOKEN,
}


def merge(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merges overrides into a copy of base (dicts merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


class Rendered:
    """One rendering: the raw files and the non-empty objects parsed from them."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.notes = files.get(NOTES, "")
        self.objects: list[dict[str, Any]] = []
        self.yaml_text = ""
        for path, text in sorted(files.items()):
            if path == NOTES:
                continue
            # Switched-off templates render as blank documents.
            docs = [d for d in yaml.safe_load_all(text) if d]
            self.objects.extend(docs)
            if docs:
                self.yaml_text += "---\n# Source: " + path + "\n" + text.strip("\n") + "\n"

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        assert len(found) <= 1
        return found[0] if found else None

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        """The gateway container (sidecars may sit beside it)."""
        (container,) = [c for c in self.pod_spec["containers"] if c["name"] == "gateway"]
        return container

    def service(self, name: str = FULLNAME) -> dict[str, Any]:
        """The Service called `name` (the main one by default)."""
        (service,) = [s for s in self.all("Service") if s["metadata"]["name"] == name]
        return service

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container.get("env", [])}

    @property
    def config(self) -> dict[str, str]:
        return self.one("ConfigMap")["data"]

    @property
    def pod_annotations(self) -> dict[str, str]:
        return self.deployment["spec"]["template"]["metadata"].get("annotations", {})


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm.Chart):
    """render(values) -> Rendered, with BASE_VALUES under `values`; raises
    what Helm raises (HelmRenderError for a template `fail`, HelmValuesError
    for a schema violation)."""

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        files = chart.render(
            merge(BASE_VALUES, values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True
        )
        return Rendered(files)

    return _render


def strings_in(node: Any) -> Iterator[str]:
    """Every string (keys and values) inside a parsed object."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)
    elif isinstance(node, str):
        yield node

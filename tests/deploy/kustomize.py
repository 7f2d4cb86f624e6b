"""Rendering deploy/kubernetes: ``kubectl kustomize`` when kubectl is installed, otherwise this small
stand-in for the features our kustomizations use (``namespace``, ``labels`` with selectors,
``configMapGenerator`` from files, ``images``) — enough to validate the same objects offline."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = {"Namespace"}


def render(directory: Path) -> tuple[list[dict[str, Any]], str]:
    """The rendered objects, and which renderer made them."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True,
                             timeout=60).stdout
        return [d for d in yaml.safe_load_all(out) if d], "kubectl kustomize"
    return _render_here(directory), "tests/deploy/kustomize.py"


def _render_here(directory: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs = [d for r in k.get("resources", []) for d in yaml.safe_load_all((directory / r).read_text()) if d]
    renamed: dict[str, str] = {}
    for gen in k.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}
        digest = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:10]
        renamed[gen["name"]] = f"{gen['name']}-{digest}"
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": renamed[gen["name"]]},
                     "data": data})
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in k.get("images", [])}
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if k.get("namespace") and doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = k["namespace"]
        for entry in k.get("labels", []):
            meta.setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeSelectors"):
                _select(doc, entry["pairs"])
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            c["image"] = images.get(c["image"], c["image"])
        for v in spec.get("volumes", []):
            if "configMap" in v:
                v["configMap"]["name"] = renamed.get(v["configMap"]["name"], v["configMap"]["name"])
    return docs


def _select(doc: dict[str, Any], pairs: dict[str, str]) -> None:
    spec = doc.get("spec", {})
    if doc["kind"] == "Service":
        spec.setdefault("selector", {}).update(pairs)
    if "selector" in spec and doc["kind"] != "Service":
        spec["selector"].setdefault("matchLabels", {}).update(pairs)
    if "template" in spec:
        spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)

"""deploy/kubernetes renders (kubectl kustomize, or tests/deploy/kustomize.py without kubectl), every
object validates against the Kubernetes API schema (kubernetes-validate, offline, strict), and the
manifests agree with the code: probe paths, the port, the *_FILE settings, selectors, non-root."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from aiohttp import web

from bot.policy_file import parse_policy
from bot.settings import FILE_SETTINGS, Settings
from tests.deploy.kustomize import _render_here, render

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("directory", [BASE, BASE / "postgres-example"], ids=["jitbot", "postgres-example"])
@pytest.mark.parametrize("renderer", ["default", "stand-in"])
def test_every_rendered_object_validates_against_the_kubernetes_schema(directory: Path, renderer: str) -> None:
    docs = render(directory)[0] if renderer == "default" else _render_here(directory)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any error


def test_the_example_secrets_validate_and_carry_every_key_the_deployment_reads() -> None:
    import yaml

    secrets = [d for d in yaml.safe_load_all((BASE / "secrets.example.yaml").read_text()) if d]
    for doc in secrets:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    keys = {s["metadata"]["name"]: set(s["stringData"]) for s in secrets}
    docs, _ = render(BASE)
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in keys
    for env in pod["containers"][0]["env"]:
        if env["name"].endswith("_FILE"):
            folder, key = env["value"].rsplit("/", 1)
            [volume] = [n for n, p in mounts.items() if p == folder]
            [secret] = [v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == volume]
            assert key in keys[secret], f"{env['name']}: {secret} has no key {key}"


def test_the_deployment_agrees_with_the_code() -> None:
    from bot.observability.probes import add_ops_routes

    docs, _ = render(BASE)
    deployment, service, pdb = _one(docs, "Deployment"), _one(docs, "Service"), _one(docs, "PodDisruptionBudget")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    # selectors pick the pods
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] > pdb["spec"]["minAvailable"]
    # the probes are jitbot's routes, on its port
    app = web.Application()
    add_ops_routes(app, rt=None)  # type: ignore[arg-type]  # only the routes are read
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez" in routes
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    [port] = container["ports"]
    assert port["containerPort"] == Settings.model_fields["PORT"].default
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # non-root, nothing writable but /tmp, no privileges, limits set
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None and pod["securityContext"]["runAsUser"] == int(uid.group(1))
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    assert pod["automountServiceAccountToken"] is False
    # SIGTERM: the preStop pause plus the worker's settling (grants 10 s, outbox 10 s) fit the grace period
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= pause + 20
    # secrets only as files: no secret value and no secretKeyRef in the pod spec
    env = {e["name"]: e for e in container["env"]}
    for name in FILE_SETTINGS:
        assert name not in env
    assert all("secretKeyRef" not in e.get("valueFrom", {}) for e in env.values())
    # each *_FILE is a setting that reads files, or a ${NAME} the policy refers to
    policy_text = (BASE / "policy.yml").read_text()
    for name in env:
        if name.endswith("_FILE"):
            base = name.removesuffix("_FILE")
            assert base in FILE_SETTINGS or f"${{{base}}}" in policy_text, name


def test_the_example_policy_is_valid() -> None:
    parse_policy((BASE / "policy.yml").read_text(), source="deploy/kubernetes/policy.yml",
                 env={"OKTA_API_TOKEN": "00example"})

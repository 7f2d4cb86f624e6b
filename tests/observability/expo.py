"""Reading a Prometheus exposition back, and the few PromQL shapes the documented alerts use."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# max(name), min(name{l="v"}), max(delta(name{l="v"}[1h])), compared with a number
_EXPR = re.compile(r"^(max|min)\((delta\()?([a-z_:]+)(?:\{([^}]*)\})?(?:\[\w+\])?\)?\)\s*(>|==)\s*([\d.]+)$")


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def documented_alerts() -> list[dict[str, str]]:
    text = DOCS.read_text()
    section = text[text.index("## Metrics"):text.index("## Retries and alerts")]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    return list(yaml.safe_load(block))


def _select(scrape: Samples, name: str, labels: str | None) -> list[float]:
    want = dict(re.findall(r'(\w+)="([^"]*)"', labels or ""))
    return [v for (n, ls), v in scrape.items() if n == name and all(dict(ls).get(k) == x for k, x in want.items())]


def fires(expr: str, before: Samples | None, after: Samples) -> bool:
    """Whether ``expr`` is true on ``after`` (``delta`` compares with ``before``). A selector that matches
    no series makes the expression empty: it does not fire (as in Prometheus)."""
    m = _EXPR.match(expr.strip())
    if m is None:
        raise AssertionError(f"the test cannot read the documented alert {expr!r}")
    agg, delta, name, labels, op, bound = m.groups()
    now = _select(after, name, labels)
    if not now:
        return False
    if delta:
        assert before is not None, f"{expr}: needs a scrape before"
        then = _select(before, name, labels)
        if not then:
            return False  # no earlier point: Prometheus' delta has nothing to compare with
        values = [a - b for a, b in zip(now, then, strict=True)]
    else:
        values = now
    value = max(values) if agg == "max" else min(values)
    return value > float(bound) if op == ">" else value == float(bound)

"""A PNG line chart of privileged hours granted per week against the standing baseline (matplotlib, Agg)."""

from __future__ import annotations

import io
from datetime import date


def weekly_chart_png(weekly: list[tuple[date, float, float]], *, title: str = "Privileged access per week") -> bytes:
    """PNG bytes: granted hours per week (line) and the standing baseline (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.subplots()
    weeks = [w.isoformat() for w, _, _ in weekly]
    ax.plot(weeks, [g for _, g, _ in weekly], marker="o", label="hours granted (JIT)")
    if any(b for _, _, b in weekly):
        ax.plot(weeks, [b for _, _, b in weekly], linestyle="--", label="standing baseline")
    ax.set_title(title)
    ax.set_xlabel("week starting")
    ax.set_ylabel("hours")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right")
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()

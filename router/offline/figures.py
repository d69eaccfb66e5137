"""Matplotlib for the reports' plots: imported on first use (extra ``eval``), headless, and saved the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.errors import MissingDependencyError

__all__ = ["pyplot", "save_figure"]


def pyplot(what: str) -> Any:
    """``matplotlib.pyplot`` on the Agg backend; ``what`` names the plot in the install hint."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError(f"the {what} needs matplotlib: pip install 'rerank-router[eval]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; returns the path written."""
    import matplotlib.pyplot as plt

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    return target

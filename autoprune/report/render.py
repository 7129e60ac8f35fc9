"""Render ``report.html`` to a PNG in headless Chromium, and check what it shows.

    autoprune report RUN_DIR --screenshot report.png

needs a Chromium on the PATH (Debian: ``apt-get install chromium``). The check looks at the
pixels: the page is not blank, and the embedded plots were decoded and drawn (their bar and
marker colours are on the page), so a report whose images are broken is caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..encoding import atomic_write
from ..errors import ConfigError
from . import plots

#: Chromium's flags for a closed machine: no sandbox (root), no GPU, no background traffic.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def find_chromium() -> str | None:
    """The Chromium executable on the PATH (``chromium``, ``chromium-browser``, Chrome)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    html_path: str | os.PathLike,
    png_path: str | os.PathLike,
    width: int = 1200,
    height: int = 4000,
    timeout: float = 120.0,
) -> Path:
    """Render ``html_path`` in headless Chromium and write a ``width`` x ``height`` PNG.

    Example::

        from autoprune.report.render import screenshot
        screenshot("runs/digits/report.html", "docs/report.png")
    """
    exe = find_chromium()
    if exe is None:
        raise ConfigError(
            "screenshot: no Chromium on the PATH; install it (Debian: apt-get install chromium)"
        )
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise ConfigError(f"screenshot: {html_path} does not exist")
    png_path = Path(png_path)
    with tempfile.TemporaryDirectory(prefix="autoprune-chromium-") as profile:
        shot = Path(profile) / "shot.png"
        cmd = [
            exe,
            *FLAGS,
            f"--user-data-dir={profile}/profile",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            html_path.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if not shot.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(
                f"screenshot: Chromium wrote no image (exit {proc.returncode}: {last})"
            )
        data = shot.read_bytes()
    atomic_write(png_path, data)
    return png_path


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


def inspect(png_path: str | os.PathLike) -> dict[str, float]:
    """What a report screenshot shows: the share of inked pixels and of each plot colour.

    ``ink`` is the fraction of pixels that are not background; ``kept``, ``removed`` and
    ``feasible`` are the fractions drawn in the per-layer, channel-norm and history plots'
    colours. A blank page, or one whose embedded images failed to decode, has (nearly) none.
    """
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png_path))
    rgb = (img[..., :3] * 255).round().astype(np.int16)
    out = {"height": float(rgb.shape[0]), "width": float(rgb.shape[1])}
    out["ink"] = float((np.abs(rgb - 255).sum(-1) > 60).mean())
    for name, color in (
        ("kept", plots.KEPT),
        ("removed", plots.REMOVED),
        ("feasible", plots.FEASIBLE),
    ):
        out[name] = float((np.abs(rgb - _rgb(color)).sum(-1) <= 12).mean())
    return out


def check(png_path: str | os.PathLike, min_pixels: int = 50) -> dict[str, float]:
    """Raise ``ConfigError`` unless the screenshot shows text and the report's plots.

    Each plot colour must cover at least ``min_pixels`` pixels (a few scatter markers do).
    """
    seen = inspect(png_path)
    area = seen["height"] * seen["width"]
    missing = [k for k in ("kept", "removed", "feasible") if seen[k] * area < min_pixels]
    if seen["ink"] < 0.01 or missing:
        raise ConfigError(
            f"screenshot {png_path}: the report did not render as expected "
            f"(ink {seen['ink']:.3f}, plot colours missing: {', '.join(missing) or 'none'})"
        )
    return seen

"""The screenshot check: blank or broken pages fail, a rendered report passes."""

import base64

import matplotlib.pyplot as plt
import numpy as np
import pytest

from autoprune.errors import ConfigError
from autoprune.report import plots, render

chromium = pytest.mark.skipif(render.find_chromium() is None, reason="no chromium on the PATH")


def _page(path, colors=()):
    img = np.ones((400, 300, 3))
    for i, c in enumerate(colors):
        img[40 * i : 40 * i + 30, 20:200] = render._rgb(c) / 255
    img[360:380, 10:290] = 0.1  # some text-like ink
    plt.imsave(path, img)
    return path


def test_inspect_finds_the_plot_colours(tmp_path):
    seen = render.check(_page(tmp_path / "ok.png", (plots.KEPT, plots.REMOVED, plots.FEASIBLE)))
    assert seen["kept"] > 0.04 and seen["removed"] > 0.04 and seen["feasible"] > 0.04


@pytest.mark.parametrize(
    "colors, missing",
    [((), "kept, removed, feasible"), ((plots.KEPT, plots.REMOVED), "feasible")],
)
def test_check_rejects_pages_without_plots(tmp_path, colors, missing):
    with pytest.raises(ConfigError, match=f"plot colours missing: {missing}"):
        render.check(_page(tmp_path / "bad.png", colors))


@chromium
def test_chromium_draws_embedded_images_and_not_broken_ones(tmp_path):
    png = _page(tmp_path / "plot.png", (plots.KEPT, plots.REMOVED, plots.FEASIBLE))
    data = base64.b64encode(png.read_bytes()).decode()
    good = tmp_path / "good.html"
    good.write_text(f'<h1>report</h1><img src="data:image/png;base64,{data}">')
    render.check(render.screenshot(good, tmp_path / "good.png", width=600, height=600))
    broken = tmp_path / "broken.html"
    broken.write_text('<h1>report</h1><img src="data:image/png;base64,AAAA">')
    with pytest.raises(ConfigError, match="did not render"):
        render.check(render.screenshot(broken, tmp_path / "broken.png", width=600, height=600))


def test_screenshot_names_a_missing_page(tmp_path):
    if render.find_chromium() is None:
        with pytest.raises(ConfigError, match="no Chromium on the PATH"):
            render.screenshot(tmp_path / "none.html", tmp_path / "x.png")
    else:
        with pytest.raises(ConfigError, match="does not exist"):
            render.screenshot(tmp_path / "none.html", tmp_path / "x.png")

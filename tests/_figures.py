"""Layout checks for report figures at the size they are shown: every label inside the figure,
no legend over a bar, no text too small to read."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

MIN_FONT_PT = 8.0


def report_figures(source: Path, out: Path, monkeypatch) -> list:
    """The report's figures, as :func:`apexmusic.report.write_report` draws them for ``source``."""
    import importlib
    import pkgutil

    import apexmusic.report as report
    from apexmusic.report import render

    figures = []
    draw = render._img
    for info in pkgutil.iter_modules(report.__path__):  # every module that draws through _img
        module = importlib.import_module(f"{report.__name__}.{info.name}")
        if getattr(module, "_img", None) is draw:
            monkeypatch.setattr(module, "_img", lambda fig: figures.append(fig) or draw(fig))
    report.write_report(source, out)
    return figures


def layout_problems(fig) -> list[str]:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    problems = []
    title = next((ax.get_title() for ax in fig.axes if ax.get_title()), "untitled")
    # what is drawn of each axes (tick labels, axis labels, title, legend) and of the figure
    for artist in [*fig.axes, *fig.legends, *fig.texts]:
        box = artist.get_tightbbox(renderer)
        if box is not None and (
            box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5
        ):
            problems.append(f"{title}: {_describe(artist)} reaches outside the figure {box.bounds}")
    for text in fig.findobj(Text):
        if text.get_visible() and text.get_text().strip() and text.get_fontsize() < MIN_FONT_PT:
            problems.append(f"{title}: {text.get_text()!r} is {text.get_fontsize()} pt")
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        legend_box = legend.get_window_extent(renderer)
        for bar in (p for p in ax.patches if isinstance(p, Rectangle)):
            shown = Bbox.intersection(
                bar.get_window_extent(renderer), ax.bbox
            )  # bars are clipped to the axes
            if bar.get_height() and shown is not None and legend_box.overlaps(shown):
                problems.append(f"{title}: the legend covers a bar")
                break
    return problems


def _describe(artist) -> str:
    title = getattr(artist, "get_title", lambda: "")()
    labels = [t.get_text() for t in getattr(artist, "get_xticklabels", list)()]
    return f"{type(artist).__name__} {title!r} (x labels {labels[:3]})"

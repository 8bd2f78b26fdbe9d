"""reports/index.html: one self-contained page with the tables, the claims, plots, frames and videos.

Everything is inline (CSS, plots and sample frames as base64 images) so the
page opens from disk without a server or network; only the videos are
linked, by paths relative to the page, because they can be large.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from talkhead_models.reporting.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, STATUS_NOTE, Outcome
from talkhead_models.reporting.curves import Curve
from talkhead_models.reporting.records import RecordSet
from talkhead_models.reporting.tables import OUR_SOURCE, Table

log = logging.getLogger(__name__)

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".webm")
BAR_METRICS = ("PSNR", "SSIM", "LPIPS", "M-LMD", "Sync", "FPS")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th:nth-child(-n+4), td:nth-child(-n+4) { text-align: left; }
tr.paper { background: #f4f6fb; }
tr.ours { background: #fff; }
tr.notrun { color: #999; }
td.holds { color: #176317; font-weight: bold; } td.fails { color: #a31515; font-weight: bold; }
td.pending { color: #777; } td.inconclusive { color: #8a6d00; font-weight: bold; }
ol.footnotes, ul.notes { font-size: 0.8em; color: #444; }
figure { display: inline-block; margin: 0.3em; } figcaption { font-size: 0.8em; }
nav a { margin-right: 1em; }
"""


@dataclass(frozen=True)
class Media:
    """Sample frames (inline) and videos (relative links) of one (method, identity)."""

    method: str
    identity: str
    frames: list[tuple[str, str]] = field(default_factory=list)
    """(file name, data URI)."""
    videos: list[tuple[str, str]] = field(default_factory=list)
    """(file name, path relative to the page)."""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(figure) -> str:
    """A matplotlib Figure as a base64 PNG data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def psnr_time_figure(curves: list[Curve]):
    """Validation PSNR against training wall time, one line per (method, identity); None without curves."""
    curves = [curve for curve in curves if curve.val_psnr]
    if not curves:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for curve in curves:
        axes.plot(curve.seconds, curve.val_psnr, marker=".", label=f"{curve.method} / {curve.identity}")
    axes.set_xlabel("training wall time (s)")
    axes.set_ylabel("validation PSNR (dB)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return figure


def metric_bars_figure(records: RecordSet, metrics: tuple[str, ...] = BAR_METRICS):
    """Self-driven means per run for a few metrics, one row per run in every panel; None if nothing is measured.

    A run whose value is n/a or infinite (ground truth's PSNR) gets no bar but a label saying so.
    """
    keys = records.keys()
    names = [records.method(key) for key in keys]
    panels = []
    for metric in metrics:
        values = [records.aggregate(key, "self", metric) for key in keys]
        values = [a.value if a is not None else None for a in values]
        if any(v is not None and v.available and math.isfinite(v.value) for v in values):
            panels.append((metric, values))
    if not panels:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.2 + 2.6 * len(panels), max(2.0, 0.3 * len(keys) + 1.0)))
    axes_list = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for axes, (metric, values) in zip(axes_list, panels):
        finite = [v.value if v is not None and v.available and math.isfinite(v.value) else 0.0 for v in values]
        axes.barh(range(len(keys)), finite, color="#4a78b5")
        for row, value in enumerate(values):
            if value is None or not value.available:
                axes.text(0, row, " n/a", va="center", fontsize=7, color="#777")
            elif not math.isfinite(value.value):
                axes.text(0, row, f" {value.cell()}", va="center", fontsize=7, color="#777")
        example = next(v for v in values if v is not None and v.available)
        unit = f" ({example.unit})" if example.unit else ""
        axes.set_title(f"{metric} {'↑' if example.higher_is_better else '↓'}{unit}", fontsize=9)
        axes.tick_params(axis="x", labelsize=7)
    axes_list[0].set_yticks(range(len(keys)), names, fontsize=7)
    axes_list[0].invert_yaxis()
    figure.tight_layout()
    return figure


def _frame_data_uri(path: Path, width: int) -> str:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, max(1, round(image.height * width / image.width))))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def collect_media(videos_dir: Path | None, page_dir: Path, frames_per_result: int = 6,
                  frame_width: int = 256) -> list[Media]:
    """``<videos_dir>/<method>/<identity>/*.jpg|png`` (embedded, downscaled) and ``*.mp4`` (linked)."""
    if videos_dir is None or not Path(videos_dir).is_dir():
        return []
    found = []
    for folder in sorted(p for p in Path(videos_dir).glob("*/*") if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        frames = [p for p in files if p.suffix.lower() in FRAME_SUFFIXES][:frames_per_result]
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        if not frames and not videos:
            continue
        embedded = []
        for frame in frames:
            try:
                embedded.append((frame.name, _frame_data_uri(frame, frame_width)))
            except OSError as error:
                log.warning("%s: not embedded (%s)", frame, error)
        linked = [(video.name, Path(os.path.relpath(video, page_dir)).as_posix()) for video in videos]
        found.append(Media(folder.parent.name, folder.name, embedded, linked))
    return found


def table_html(table: Table) -> str:
    """One table with its footnotes and notes, from the same data as the Markdown."""

    def cell(text: str, marks: tuple[int, ...]) -> str:
        sup = f"<sup>{','.join(map(str, marks))}</sup>" if marks else ""
        return f"<td>{_e(text)}{sup}</td>"

    parts = [f'<h3 id="{_e(table.id)}">{_e(table.title)}</h3>', "<table>", "<thead><tr>"]
    parts += [f"<th>{_e(header)}</th>" for header in table.headers]
    parts.append("</tr></thead><tbody>")
    for row in table.rows:
        kind = "notrun" if row.not_run else ("ours" if row.source == OUR_SOURCE else "paper")
        parts.append(f'<tr class="{kind}"><td>{_e(row.source)}</td>{cell(row.method.text, row.method.marks)}'
                     f"<td>{_e(row.matches)}</td><td>{_e(row.identities)}</td>")
        parts += [cell(c.text, c.marks) for c in row.cells]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    if table.footnotes:
        parts.append('<ol class="footnotes">' + "".join(f"<li>{_e(t)}</li>" for t in table.footnotes) + "</ol>")
    if table.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(parts)


def claims_html(outcomes: list[Outcome]) -> str:
    rows = []
    for outcome in outcomes:
        status = outcome.verdict.status
        kind = {HOLDS: "holds", DOES_NOT_HOLD: "fails", INCONCLUSIVE: "inconclusive"}.get(status, "pending")
        rows.append(f"<tr><td>{_e(outcome.claim.text)}</td><td>{_e(outcome.claim.paper_name)}</td>"
                    f"<td>{_e(outcome.claim.measured)}</td><td>{_e(outcome.verdict.numbers)}</td>"
                    f"<td>{_e(outcome.aids_text())}</td>"
                    f'<td class="{kind}">{_e(status)}</td></tr>')
    return ("<table><thead><tr><th>Claim</th><th>Paper</th><th>How measured</th><th>Our numbers</th>"
            "<th>Demo aids of the runs compared</th><th>Status</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def media_html(media: list[Media]) -> str:
    if not media:
        return "<p>No sample frames or videos yet.</p>"
    parts = []
    for item in media:
        parts.append(f"<h3>{_e(item.method)} / {_e(item.identity)}</h3><div>")
        parts += [f'<figure><img src="{uri}" alt="{_e(name)}"><figcaption>{_e(name)}</figcaption></figure>'
                  for name, uri in item.frames]
        parts += [f'<figure><video controls preload="metadata" width="512" src="{_e(quote(path))}"></video>'
                  f"<figcaption>{_e(name)}</figcaption></figure>" for name, path in item.videos]
        parts.append("</div>")
    return "\n".join(parts)


def _figure_html(figure, caption: str, empty: str) -> str:
    if figure is None:
        return f"<p>{_e(empty)}</p>"
    return (f'<figure><img src="{png_data_uri(figure)}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_index(tables: list[Table], outcomes: list[Outcome], records: RecordSet, curves: list[Curve],
                 page_path: Path, media: list[Media] | None = None, links: list[tuple[str, Path]] = ()) -> str:
    """The whole page. ``links``: (title, path) of other reports, linked relative to ``page_path`` if they exist."""
    page_dir = Path(page_path).parent
    link_items = [f'<li><a href="{_e(quote(Path(os.path.relpath(path, page_dir)).as_posix()))}">{_e(title)}</a></li>'
                  for title, path in links if Path(path).exists()]
    contents = "".join(f'<li><a href="#{_e(t.id)}">{_e(t.title)}</a></li>' for t in tables)
    sections = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>talkhead: results</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>talkhead: the four papers' tables, reproduced</h1>",
        f"<p>{_e(records.describe())}. {len(records)} metric records, {len(curves)} training curves.</p>",
        '<nav><a href="#claims">Claims</a><a href="#tables">Tables</a><a href="#plots">Plots</a>'
        '<a href="#media">Frames and videos</a><a href="#reports">Other reports</a></nav>',
        '<h2 id="claims">Claims</h2>', f"<p>{_e(STATUS_NOTE.replace('**', ''))}</p>", claims_html(outcomes),
        '<h2 id="tables">Tables</h2>',
        "<p>Rows marked <em>paper</em> are the papers' numbers on their data; rows marked <em>this run</em> are "
        "this pipeline's on this corpus, averaged over identities. Superscripts point to the footnotes below "
        "each table.</p>", f"<ul>{contents}</ul>",
        *(table_html(table) for table in tables),
        '<h2 id="plots">Plots</h2>',
        _figure_html(psnr_time_figure(curves), "Validation PSNR vs training wall time",
                     "No training curves yet (curve.csv of the training stages)."),
        _figure_html(metric_bars_figure(records), "Self-driven means per run (n/a and infinite values omitted)",
                     "No measured values to plot yet."),
        '<h2 id="media">Frames and videos</h2>', media_html(media or []),
        '<h2 id="reports">Other reports</h2>',
        f"<ul>{''.join(link_items)}</ul>" if link_items else "<p>No other reports yet.</p>",
        "</body></html>",
    ]
    return "\n".join(sections) + "\n"

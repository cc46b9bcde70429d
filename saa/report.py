"""One self-contained HTML report of a run folder (``saa report RUN_DIR`` -> ``RUN_DIR/report.html``).

Everything is embedded (pictures as base64 PNG, no script, no external style sheet), so the file
opens from disk in any browser without a server. Contents:

* the metrics table per category + mean (``metrics.json``),
* ROC and PR curves per category, computed exactly as the metrics were (SPEC §5: the stored raw
  maps resized to ``eval_size`` and normalised per category; the ground truth re-read through the
  dataset recorded in ``config.yaml``). When the masks cannot be read any more (dataset moved), the
  curves are image-level only (from ``scores.csv``) and say so,
* per category the highest-scoring normal images and the lowest-scoring anomalous ones (heat
  overlays of the normalised map, ground-truth outline in white),
* the resolved configuration, the timings and the versions.

The HTML helpers (:func:`img_tag`, :func:`html_page`) are shared with ``saa demo``.
"""
from __future__ import annotations

import base64
import html
import logging
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

log = logging.getLogger("saa.report")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd} h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} tr.mean td{font-weight:bold;background:#f3f3f3}
.note{background:#fff6d6;border:1px solid #e6c84a;padding:8px 12px;margin:10px 0}
.warn{background:#ffe3e3;border-color:#d9534f}
.gallery{display:flex;flex-wrap:wrap;gap:8px} figure{margin:0;font-size:.78em;text-align:center}
figure img{display:block;border:1px solid #ccc} pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:.8em}
.small{color:#666;font-size:.85em}
"""


# ----------------------------------------------------------------------------------------------
# HTML helpers


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(rgb_or_png, alt: str = "", width: Optional[int] = None, cls: str = "") -> str:
    """``<img>`` with the picture embedded as base64 PNG (RGB uint8 array or PNG bytes)."""
    from .visualize import png_bytes

    png = rgb_or_png if isinstance(rgb_or_png, (bytes, bytearray)) else png_bytes(rgb_or_png)
    w = f' width="{int(width)}"' if width else ""
    c = f' class="{esc(cls)}"' if cls else ""
    return f'<img src="{png_data_uri(bytes(png))}" alt="{esc(alt)}"{w}{c}>'


def html_page(title: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n<h1>{esc(title)}</h1>\n"
            + "\n".join(body) + "\n</body></html>\n")


def versions() -> dict[str, str]:
    """python, torch, numpy, saa (and the platform)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("saa", "torch", "numpy"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # pragma: no cover - a broken install
            out[mod] = "unknown"
    return out


def versions_html() -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in versions().items())
    return f"<table>{rows}</table>"


def _figure_png(fig) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# run folder reading (through saa.results.RunFolder: the layout is its business)


def _dataset_of(folder):
    """The dataset recorded in the run's ``config.yaml`` (or raise)."""
    from .config import load_config
    from .datasets import build_dataset
    from .evaluation import split_dataset_options

    cfg = load_config(folder.config_yaml)
    ds_options, _ = split_dataset_options(cfg.dataset.options)
    return build_dataset(cfg.dataset.kind, cfg.dataset.root, **ds_options)


def _thin(x: np.ndarray, y: np.ndarray, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= n:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, n).astype(np.int64))
    return x[idx], y[idx]


def _roc_pr(labels, scores) -> Optional[dict[str, np.ndarray]]:
    """ROC (fpr, tpr) and PR (recall, precision) points from :func:`saa.metrics.binary_curve_counts`."""
    from .metrics import binary_curve_counts

    c = binary_curve_counts(labels, scores)
    if c.n_pos == 0 or c.n_neg == 0:
        return None
    tps, fps = c.tps.astype(np.float64), c.fps.astype(np.float64)
    fpr = np.concatenate([[0.0], fps / c.n_neg])
    tpr = np.concatenate([[0.0], tps / c.n_pos])
    recall = np.concatenate([[0.0], tps / c.n_pos])
    precision = np.concatenate([[1.0], tps / np.maximum(tps + fps, 1)])
    fpr, tpr = _thin(fpr, tpr)
    recall, precision = _thin(recall, precision)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision}


def _curves_png(category: str, image_curve, pixel_curve, metrics: Mapping[str, Any], pixel_note: str) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 3.6))
    ax1, ax2 = fig.subplots(1, 2)

    def fmt(key):
        v = metrics.get(key)
        return "n/a" if v is None else f"{v:.1f}"

    for curve, name, roc_key, ap_key, style in (
            (image_curve, "image", "image_auroc", "image_ap", "-"),
            (pixel_curve, "pixel", "pixel_auroc", "pixel_ap", "--")):
        if curve is None:
            continue
        ax1.plot(curve["fpr"], curve["tpr"], style, label=f"{name} (AUROC {fmt(roc_key)})")
        ax2.step(curve["recall"], curve["precision"], style, where="post", label=f"{name} (AP {fmt(ap_key)})")
    ax1.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02), title="ROC")
    ax2.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is ax1 else "lower left", fontsize=8)
    title = category + ("" if not pixel_note else f" — {pixel_note}")
    fig.suptitle(title, fontsize=10)
    return _figure_png(fig)


# ----------------------------------------------------------------------------------------------
# the report


def _metrics_table(result) -> str:
    from .evaluation import METRIC_KEYS, METRIC_LABELS

    def cell(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    head = "".join(f"<th>{esc(METRIC_LABELS.get(k, k))}</th>" for k in METRIC_KEYS)
    rows = [f"<tr><th>category</th><th>images</th><th>normal</th><th>anomalous</th>{head}</tr>"]
    for cat, info in result.categories.items():
        c = info.counts
        cells = "".join(f"<td>{cell(info.metrics.get(k))}</td>" for k in METRIC_KEYS)
        rows.append(f'<tr id="row-{esc(cat)}"><td>{esc(cat)}</td><td>{c.images}</td>'
                    f'<td>{c.normal}</td><td>{c.anomalous}</td>{cells}</tr>')
    cells = "".join(f"<td>{cell(result.mean.get(k))}</td>" for k in METRIC_KEYS)
    rows.append(f'<tr class="mean"><td>mean</td><td>{result.totals.images}</td><td></td><td></td>{cells}</tr>')
    return "<table>" + "".join(rows) + "</table><p class=\"small\">Values in percent; the mean is the " \
                                       "unweighted mean over categories of the defined values.</p>"


def _figure(rgb, caption: str) -> str:
    return f"<figure>{img_tag(rgb, alt=caption)}<figcaption>{esc(caption)}</figcaption></figure>"


@dataclass
class _CategoryData:
    """What a category's section is drawn from: its scores.csv rows, the stored maps of this run
    (None where missing or made by another run), their normalised eval-size maps, the labels and
    the ground truth that could be read."""

    rows: list
    loaded: list
    norm: Optional[dict]
    labels: list
    samples: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    pixel_note: str = ""

    @property
    def labelled(self) -> bool:
        return all(lab is not None for lab in self.labels) and len(self.rows) > 0

    @property
    def ok(self) -> list[int]:
        return [i for i, z in enumerate(self.loaded) if z is not None]


def _timing_html(info) -> list[str]:
    if not info.seconds:
        return []
    text = ", ".join(f"{k} {v:.2f} s" if k != "per_computed_image" else f"{v:.2f} s per computed image"
                     for k, v in info.seconds.items())
    return [f"<p class=\"small\">{esc(text)}; {info.computed} computed, {info.reused} reused</p>"]


def _category_data(cstore, cat: str, info, eval_size: int, parts: list[str]) -> _CategoryData:
    """The rows and this run's maps, normalised; maps of another run are left out with a note."""
    from .evaluation import category_maps_and_scale

    rows = cstore.read_scores()
    loaded = [cstore.read_map(r.key) for r in rows]
    if info.map_fingerprint:  # maps written by another run (other settings, another image set) are not drawn
        other = [i for i, z in enumerate(loaded) if z is not None and z.fingerprint != info.map_fingerprint]
        if other:
            msg = (f"{cat}: {len(other)} of {len(rows)} stored maps were made by another run than these metrics "
                   f"(other settings or another image set, e.g. {rows[other[0]].key}): the curves and pictures "
                   f"below use only the {len(rows) - len(other)} maps of this run")
            log.warning("report: %s", msg)
            parts.append(f"<p class=\"note warn\">{esc(msg)}</p>")
            for i in other:
                loaded[i] = None
    data = _CategoryData(rows, loaded, None, [r.label for r in rows])
    ok = data.ok
    if ok:
        norm_ok, _, _, _ = category_maps_and_scale([loaded[i].map for i in ok], eval_size, cat)
        data.norm = {i: norm_ok[j] for j, i in enumerate(ok)}
    return data


def _read_ground_truth(data: _CategoryData, cat: str, eval_size: int, dataset, dataset_error: Optional[str]) -> None:
    """The samples (via the dataset of config.yaml) and, for pixel curves and outlines, the masks at
    eval size; why there are none is ``data.pixel_note``."""
    from .evaluation import resize_masks

    if dataset is not None:
        try:
            data.samples = {s.key: s for s in dataset.samples(cat)}
        except Exception as e:
            dataset_error = str(e)
    if not data.labelled or data.norm is None:
        return
    ok, rows = data.ok, data.rows
    if dataset is None or not getattr(dataset, "has_masks", False):
        data.pixel_note = ("image-level curves only: " + (f"ground truth not readable ({dataset_error})"
                           if dataset is None else "the dataset has no masks"))
    elif len(ok) < len(rows):
        data.pixel_note = f"image-level curves only: {len(rows) - len(ok)} per-image map file(s) missing"
    else:
        try:
            for i in ok:
                s = data.samples[rows[i].key]
                data.masks[i] = resize_masks([dataset.load_mask(s, data.loaded[i].image_size)], eval_size)[0]
        except Exception as e:
            data.masks = {}
            data.pixel_note = f"image-level curves only: ground truth not readable ({e})"


def _curves_html(data: _CategoryData, cat: str, info) -> list[str]:
    if not data.labelled:
        return ["<p class=\"note\">Unlabelled images: no metrics and no curves.</p>"]
    ok, pixel_note = data.ok, data.pixel_note
    img_curve = _roc_pr(np.asarray(data.labels), np.asarray([r.image_score for r in data.rows]))
    pix_curve = None
    if data.masks:
        pix_curve = _roc_pr(np.stack([data.masks[i] for i in ok]), np.stack([data.norm[i] for i in ok]))
        if pix_curve is None:
            pixel_note = "no defect pixel in the ground truth: image-level curves only"
    if img_curve is None and pix_curve is None:
        return ["<p class=\"note\">Curves undefined: the category has only one class.</p>"]
    png = _curves_png(cat, img_curve, pix_curve, info.metrics, pixel_note)
    out = [f'<div class="curves">{img_tag(png, alt=f"ROC and PR curves of {cat}")}</div>']
    if pixel_note:
        out.append(f"<p class=\"small\">{esc(pixel_note)}</p>")
    return out


def _decision_html(folder, cat: str, decision, rows) -> list[str]:
    """The recorded thresholds, the verdict counts and the decision's quality (weak: said)."""
    from .verdict import DECISION_KEY, quality_line

    image_t = decision.image_threshold if decision is not None else None
    if image_t is None:
        return []
    pixel_t = decision.pixel_threshold
    verdicts = [r.verdict for r in rows]
    alarms = sum(1 for r in rows if r.label == 0 and r.verdict == "DEFECT")
    misses = sum(1 for r in rows if r.label == 1 and r.verdict == "OK")
    pix = "" if pixel_t is None else f", pixel threshold {pixel_t:.4g} (magenta outline in the pictures)"
    q = decision.quality
    quality = "" if q is None else f" Quality on this run's images: {esc(quality_line(q))}."
    weak = ""
    if q is not None and q.weak:
        weak = (f"<p class=\"note warn\"><b>Weak decision</b>: {esc('; '.join(q.reasons))}. "
                "<code>saa predict --thresholds-from</code> refuses it unless <code>--accept-weak-decision</code> "
                "is given.</p>")
    return [f"<p>Decision (F1-optimal thresholds on the normalised scale, <code>metrics.json</code> "
            f"&rarr; <code>{DECISION_KEY}</code>): image threshold {image_t:.4g}{esc(pix)}. Verdicts: "
            f"{verdicts.count('DEFECT')} DEFECT, {verdicts.count('OK')} OK; {alarms} normal image(s) "
            f"flagged DEFECT, {misses} anomalous image(s) passed as OK.{quality} Apply them to new images: "
            f"<code>saa predict --thresholds-from {esc(folder.root)} --category {esc(cat)} ...</code></p>" + weak]


def _galleries_html(data: _CategoryData, pixel_t: Optional[float], n_gallery: int, thumb: int) -> list[str]:
    """The highest-scoring normal and lowest-scoring anomalous images (or the highest-scoring ones
    of an unlabelled set), on the category's one colour scale."""
    from .image_io import read_rgb
    from .verdict import predicted_mask
    from .visualize import MapScale, colorbar, heat_overlay, thumbnail

    rows, norm = data.rows, data.norm

    def thumb_of(i: int) -> Optional[np.ndarray]:
        z = data.loaded[i]
        src = z.image if z and z.image else (str(data.samples[rows[i].key].image_path)
                                             if rows[i].key in data.samples else "")
        amap = norm[i] if norm is not None and i in norm else None
        try:
            rgb = read_rgb(src)
        except Exception:
            if amap is None:
                return None
            rgb = np.zeros((thumb, thumb, 3), np.uint8)  # image gone: the map alone
            return heat_overlay(rgb, amap, alpha=1.0, vmax=1.0)
        pred = predicted_mask(amap, pixel_t) if amap is not None else None
        return thumbnail(rgb, amap, side=thumb, vmax=1.0, gt_mask=data.masks.get(i), defect_mask=pred,
                         verdict=rows[i].verdict)

    marks = [(float(pixel_t), "px thr")] if pixel_t is not None else []
    bar = _figure(colorbar(thumb, MapScale(0.0, 1.0, "normalised"), marks=marks), "colour scale")

    def gallery(title: str, idx: list[int]) -> str:
        figs = []
        for i in idx:
            t = thumb_of(i)
            if t is not None:
                v = rows[i].verdict
                figs.append(_figure(t, f"{rows[i].key}  score {rows[i].image_score:.3f}" + (f"  {v}" if v else "")))
        if not figs:
            return f"<h3>{esc(title)}</h3><p class=\"small\">none</p>"
        return f"<h3>{esc(title)}</h3><div class=\"gallery\">" + "".join(figs) + bar + "</div>"

    order = sorted(range(len(rows)), key=lambda i: -rows[i].image_score)
    if not data.labelled:
        return [gallery("Highest-scoring images", order[:n_gallery])]
    normal = [i for i in order if data.labels[i] == 0][:n_gallery]
    anomalous = [i for i in reversed(order) if data.labels[i] == 1][:n_gallery]
    return [gallery(f"Highest-scoring normal images (possible false alarms), top {len(normal)}", normal),
            gallery(f"Lowest-scoring anomalous images (possible misses), bottom {len(anomalous)}", anomalous)]


def _category_section(folder, cat: str, info, eval_size: int, dataset, dataset_error: Optional[str],
                      n_gallery: int, thumb: int) -> str:
    """One category of the report: timings and notes, curves, the decision, the galleries."""
    cstore = folder.category(cat)
    parts = [f'<h2 id="cat-{esc(cat)}">{esc(cat)}</h2>', *_timing_html(info)]
    parts += [f"<p class=\"note\">{esc(n)}</p>" for n in info.notes]
    if not cstore.scores_csv.is_file():
        parts.append(f"<p class=\"note\">{esc(cstore.scores_csv)} is missing: no curves, no gallery.</p>")
        return "\n".join(parts)
    data = _category_data(cstore, cat, info, eval_size, parts)
    _read_ground_truth(data, cat, eval_size, dataset, dataset_error)
    parts += _curves_html(data, cat, info)
    decision = info.decision
    parts += _decision_html(folder, cat, decision, data.rows)
    pixel_t = decision.pixel_threshold if decision is not None else None
    parts += _galleries_html(data, pixel_t, n_gallery, thumb)
    has_verdicts = decision is not None and decision.image_threshold is not None
    parts.append("<p class=\"small\">Heat overlay: normalised anomaly map (same colour scale for the whole "
                 "category; dark blue = 0); white outline: ground truth"
                 + ("; magenta outline: predicted defect pixels (pixel threshold); frame: verdict (green OK, red "
                    "DEFECT)" if has_verdicts else "") + ".</p>")
    return "\n".join(parts)


def check_metrics_file(run_dir) -> None:
    """Raise SaaError (one line) when RUN_DIR cannot be reported on: a run is writing it now,
    ``metrics.json`` is missing (with what to run), unreadable, not JSON or not a typed
    :class:`~saa.records.RunResult` (naming the field and the problem)."""
    from .results import RunFolder

    folder = RunFolder(run_dir)
    folder.check_readable()
    folder.read_metrics()


def _open_dataset(folder: Any) -> tuple[Any, Optional[str]]:
    """The dataset recorded in the run's ``config.yaml``, or None and why it cannot be opened."""
    try:
        return _dataset_of(folder), None
    except Exception as e:
        log.warning("report: the dataset of %s cannot be opened (%s); curves will be image-level only",
                    folder.root, e)
        return None, str(e)


def _method_label(result: Any) -> str:
    """The method's name as the report shows it (SAA+ with its preset when the run names none)."""
    return result.method_label or ("SAA+" + (f" (preset {result.preset})" if result.preset else ""))


def _header_html(folder: Any, result: Any, problems: Sequence[str], notes: Sequence[str]) -> list[str]:
    """The top of the report: mixed-run warning, what ran on what, method settings, notes, warnings."""
    ds = result.dataset
    method = _method_label(result)
    preset = f"preset <b>{esc(result.preset)}</b>; " if result.preset else ""
    body = []
    if problems:
        body.append("<div class=\"note warn\"><b>This folder mixes files of different runs</b>:<ul>"
                    + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></div>")
    body.append(f"<p>Method <b>{esc(method)}</b>; {preset}run folder <code>{esc(folder.root.resolve())}</code>; "
                f"dataset <code>{esc(ds.root)}</code>; out size {esc(result.out_size)}, "
                f"eval size {int(result.eval_size)}; finished {esc(result.finished)}.</p>")
    if result.method_summary:
        body.append(f"<p>{esc(result.method_summary)}.</p>")
    settings = result.method_settings or {}
    if settings:
        body.append("<h2>Method settings</h2><table>" + "".join(
            f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in settings.items()) + "</table>")
    body += [f"<p class=\"note\">{esc(n)}</p>" for n in notes]
    if result.warnings:
        body.append("<h2>Warnings</h2><ul class=\"warn\">" + "".join(f"<li>{esc(w)}</li>" for w in result.warnings)
                    + "</ul>")
    return body


def _metrics_html(result: Any) -> list[str]:
    """The links to the categories and the metrics table (with a note when the test set is unlabelled)."""
    body = []
    cats = list(result.categories)
    if cats:
        body.append("<p>Categories: " + " · ".join(f'<a href="#cat-{esc(c)}">{esc(c)}</a>' for c in cats) + "</p>")
    body.append("<h2>Metrics</h2>")
    body.append(_metrics_table(result) if result.labelled else
                "<p class=\"note\">Unlabelled test set: no metrics.</p>" + _metrics_table(result))
    return body


def _categories_html(folder: Any, result: Any, dataset: Any, dataset_error: Optional[str],
                     n_gallery: int, thumb: int) -> list[str]:
    """One section per category; a category that cannot be drawn says so and costs nothing else."""
    body = []
    for cat in result.categories:
        try:
            body.append(_category_section(folder, cat, result.categories[cat], int(result.eval_size), dataset,
                                          dataset_error, n_gallery, thumb))
        except Exception as e:  # one broken category must not cost the whole report
            log.warning("report: category %s: %s", cat, e)
            body.append(f'<h2 id="cat-{esc(cat)}">{esc(cat)}</h2><p class="note">could not be drawn: {esc(e)}</p>')
    return body


def _run_facts_html(folder: Any, result: Any) -> list[str]:
    """The timings, versions and configuration sections and the line saying when it was written."""
    t = result.timings.model_dump()
    body = ["<h2>Timings</h2><table>" + "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in t.items()) +
        f"<tr><td>images</td><td>{esc(result.totals.model_dump(mode='json'))}</td></tr></table>"]
    body.append("<h2>Versions</h2>" + versions_html())
    cfg_path = folder.config_yaml
    cfg_text = cfg_path.read_text(encoding="utf-8", errors="replace") if cfg_path.is_file() else "(config.yaml missing)"
    unused = ""
    if result.method not in (None, "saa", "full"):
        unused = (f"<p class=\"small\">Method {esc(result.method)} reads only its own settings (above), "
                  "<code>out_size</code>, <code>models.device</code> and <code>dataset</code>; the other sections "
                  "(Grounding DINO, SAM, behaviour, prompts) are the config's and are not used by it.</p>")
    body.append(f"<h2>Configuration</h2>{unused}<pre>{esc(cfg_text)}</pre>")
    body.append(f"<p class=\"small\">Report written {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                f"by saa {esc(versions().get('saa'))}.</p>")
    return body


def build_report(run_dir: str | os.PathLike, n_gallery: int = 6, thumb: int = 160,
                 notes: Sequence[str] = (), in_run: bool = False) -> str:
    """The HTML text of the report of a run folder written by :func:`saa.run.evaluate_run` (it reads
    only the files of the run folder, through :class:`saa.results.RunFolder`: ``metrics.json``,
    ``config.yaml``, the run state, the per-image results). A folder a run is writing now, or whose
    metrics are missing, is refused in one line; one whose ``metrics.json``, ``config.yaml``, run
    state or maps come from different runs is labelled so at the top (and logged as a warning).
    ``in_run``: called by the run that holds the folder's lock (at its end)."""
    from .results import RunFolder

    folder = RunFolder(run_dir)
    if not in_run:
        folder.check_readable()
    result = folder.read_metrics()
    problems = [] if in_run else folder.report_problems(result)
    for p in problems:
        log.warning("report: %s: %s", folder.root, p)
    dataset, dataset_error = _open_dataset(folder)
    title = f"{_method_label(result)} run report — {result.dataset.kind or '?'}"
    body = _header_html(folder, result, problems, notes) + _metrics_html(result)
    body += _categories_html(folder, result, dataset, dataset_error, n_gallery, thumb)
    body += _run_facts_html(folder, result)
    return html_page(title, body)


def write_report(run_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None, **kwargs) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) atomically; returns its path."""
    from .image_io import atomic_write_text
    from .results import RunFolder

    target = Path(out) if out is not None else RunFolder(run_dir).report_html
    atomic_write_text(target, build_report(run_dir, **kwargs))
    return target

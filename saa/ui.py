"""Local web UI (``saa ui``): Gradio, bound to 127.0.0.1 by default, nothing sent anywhere.

Upload an image (or pick a bundled sample), choose a config + category or describe your own part
(object word, objects per image, K, area ratio, captions), run, and see the overlay, the regions
table, the saliency, and download the map (``.npy`` and ``.png``). When the full pipeline's model
files are missing the UI says which and offers the lite method (saliency only).

Gradio analytics are switched off before Gradio is imported, the theme uses system fonts (no Google
Fonts request) and ``share`` is never enabled.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

log = logging.getLogger("saa.ui")

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = None  # None: the limit of every image read, saa.image_io.max_pixels() (default 100 Mpx)
CUSTOM = "(custom: describe below)"
CUSTOM_KEY = "custom_part"


class InputRejected(ValueError):
    """An upload the UI does not process (not an image, too large)."""


def check_upload(path: str | os.PathLike) -> None:
    """Raise :class:`InputRejected` for a non-image file, a file > 50 MB or an image over the pixel
    limit of every image read (:func:`saa.image_io.max_pixels`, default 100 Mpx; sized from the header)."""
    from .errors import ImageReadError
    from .image_io import _limit_text, max_pixels, read_header

    p = Path(path)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputRejected(f"{p.name}: {size / 2**20:.1f} MB is over the 50 MB limit")
    try:
        header = read_header(p, check_limit=False)
    except ImageReadError:
        raise InputRejected(f"{p.name} is not an image file (PNG, JPEG, BMP, TIFF or WebP)") from None
    w, h = header.width, header.height
    limit = max_pixels() if MAX_PIXELS is None else int(MAX_PIXELS)
    if limit and w * h > limit:
        raise InputRejected(f"{p.name}: {w}x{h} = {w * h / 1e6:.0f} Mpx is over the {_limit_text(limit)} limit")


def config_choices() -> list[str]:
    from .samples import REPO

    for folder in (Path("configs"), REPO / "configs"):
        found = sorted(str(p) for p in folder.glob("*.yaml"))
        if found:
            return found
    return []


def parse_captions(text: str, obj: str) -> list[list[str]]:
    """One caption a line, ``caption | filter`` (filter defaults to the object word)."""
    out = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        cap, _, filt = line.partition("|")
        out.append([cap.strip(), (filt.strip() or obj.split()[-1].strip(",. ") or obj)])
    return out


class Runner:
    """Configs and loaded pipelines, cached per (config, overrides)."""

    def __init__(self, base_overrides: Sequence[str] = ()):
        self.base_overrides = list(base_overrides)
        self._pipes: dict[Any, Any] = {}

    def config(self, path: str, custom: Optional[dict] = None):
        from .config import config_from_dict, load_config

        cfg = load_config(path, self.base_overrides)
        if custom:
            data = cfg.model_dump(mode="json", exclude_none=True)
            data.setdefault("categories", {})[CUSTOM_KEY] = custom
            cfg = config_from_dict(data, [], source="UI custom part")
        return cfg

    def categories(self, path: str) -> list[str]:
        try:
            return list(self.config(path).categories)
        except Exception as e:  # a broken config: no categories, the run reports the error
            log.warning("%s: %s", path, e)
            return []

    def method(self, cfg, name: str):
        """The method ``name`` for ``cfg``, its models loaded once per (method, models section)."""
        from .methods import canonical_name
        from .run import make_method

        name = canonical_name(name)
        key = (name, cfg.models.model_dump_json(), int(cfg.out_size))
        if name == "saa":
            from .methods.saa_plus import SAAPipeline

            if key not in self._pipes:
                self._pipes[key] = SAAPipeline(cfg).load_models()
            # the cached models with this run's config (prompts and properties may differ)
            return make_method(cfg.model_copy(update={"method": name}), pipeline=self._pipes[key])
        if key not in self._pipes:
            self._pipes[key] = make_method(cfg.model_copy(update={"method": name}))
        return self._pipes[key]

    def full(self, cfg):
        """The SAA+ pipeline of ``cfg`` with the cached models."""
        return self.method(cfg, "saa").pipeline


def _outdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="saa_ui_"))
    return d


def run_once(runner: Runner, image_path: Optional[str], sample: Optional[str], config_path: str, category: str,
             method: str, obj: str, n_objects: float, k_mask: float, area_ratio: float, captions: str):
    """The UI's run button: (overlay, saliency, boxes rows, message, [npy, png])."""
    from .image_io import atomic_save_npy, atomic_save_png, read_rgb
    from .samples import SAMPLES_DIR, lite_message, missing_model_files
    from .visualize import MapScale, candidate_boxes, heat_overlay, map_to_png, with_colorbar

    src = image_path or (str(SAMPLES_DIR / sample) if sample else None)
    if not src:
        return None, None, [], "**Upload an image or pick a sample first.**", None
    try:
        check_upload(src)
    except InputRejected as e:
        return None, None, [], f"**Rejected:** {e}", None
    try:
        custom = None
        if category == CUSTOM:
            if not obj.strip():
                return None, None, [], "**Custom part:** type the object word first.", None
            custom = {"object": obj.strip(), "n_objects": int(n_objects), "k_mask": int(k_mask),
                      "area_ratio": float(area_ratio), "prompts": parse_captions(captions, obj.strip())
                      or [["defect", obj.strip().split()[-1]]]}
            cat = CUSTOM_KEY
        else:
            cat = category
        cfg = runner.config(config_path, custom)
        cfg.category(cat)
        missing = missing_model_files(cfg)
        use = ("lite" if missing else "saa") if method == "auto" else ("saa" if method == "full" else method)
        msg = []
        if use == "saa" and missing:
            return None, None, [], ("**The full method needs model files that are missing:** "
                                    + ", ".join(f"`{m}`" for m in missing)
                                    + ". Run `bash install.sh`, or choose the **lite** method."), None
        if use == "lite":
            msg.append(lite_message(missing) if missing else "Lite method: saliency-only map, no regions.")
            msg.append("Note: one image here, so lite scores it by single-image saliency; its cross-image "
                       "scoring needs the other images of the category (`saa predict --method lite IMG1 IMG2 ...` "
                       "or `saa run CONFIG --method lite`).")
        rgb = read_rgb(src)
        out = _outdir()
        stem = Path(src).stem
        meth = runner.method(cfg, use)
        pred = meth.predict(rgb, cat)
        amap = pred.anomaly_map_full
        sal = pred.saliency if "saliency" in meth.panels else None
        rows: list[list[Any]] = []
        # one picture: its colour scale runs from 0 to its own maximum, and the bar says so with numbers
        scale = MapScale(0.0, float(np.max(amap)) if np.size(amap) and float(np.max(amap)) > 0 else 1.0, "raw")
        heat = heat_overlay(rgb, amap, scale=scale)
        if pred.has_regions:
            overlay = candidate_boxes(heat, pred.candidates, object_boxes=pred.object_boxes)
            for c in pred.defects:
                rows.append([c.caption, "kept" if c.kept else f"dropped ({c.dropped})",
                             round(c.score, 4), None if c.rescored is None else round(c.rescored, 4),
                             [round(v, 1) for v in c.box_xyxy].__repr__()])
            msg.append(f"Full {pred.summary()} (green kept, grey/red dropped).")
        else:
            overlay = heat
            msg.append(pred.summary() + ".")
        overlay = with_colorbar(overlay, scale, f"score {pred.score:.4f} (raw, no threshold)")
        if use != "lite":  # lite's one-image note is the one above
            msg.extend(f"Note: {n}" for n in pred.notes)  # e.g. cross-image saliency without other images
        npy = out / f"{stem}_map.npy"
        png = out / f"{stem}_map.png"
        atomic_save_npy(npy, np.asarray(amap, dtype=np.float32))
        atomic_save_png(png, map_to_png(amap))
        sal_img = heat_overlay(rgb, sal) if sal is not None else None
        return overlay, sal_img, rows, "\n\n".join(msg), [str(npy), str(png)]
    except Exception as e:  # shown in the UI, not a crash of the server
        log.exception("run failed")
        return None, None, [], f"**Error:** {e}", None


def build_app(config: Optional[str] = None, overrides: Sequence[str] = ()):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    from .samples import SAMPLES_DIR, default_config_path, sample_images

    runner = Runner(overrides)
    configs = config_choices()
    first = str(config) if config else str(default_config_path())
    if first not in configs:
        configs.insert(0, first)
    cats = runner.categories(first)
    samples = [p.name for p in sample_images(SAMPLES_DIR)]
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no Google Fonts

    with gr.Blocks(title="saa — zero-shot anomaly segmentation", theme=theme, analytics_enabled=False) as app:
        gr.Markdown("## saa — zero-shot anomaly segmentation (SAA+)\nEverything runs on this machine.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="image (≤ 50 MB, ≤ 100 Mpx)", type="filepath", sources=["upload"],
                                 elem_id="input-image")
                sample = gr.Dropdown(choices=[""] + samples, value="", label="…or a bundled sample",
                                     elem_id="sample")
                cfg_dd = gr.Dropdown(choices=configs, value=first, label="dataset preset config", elem_id="config")
                cat_dd = gr.Dropdown(choices=cats + [CUSTOM], value=(cats[0] if cats else CUSTOM),
                                     label="category", elem_id="category")
                method = gr.Radio(["auto", "full", "lite"], value="auto", label="method",
                                  info="auto: full SAA+ when its model files exist, else lite (saliency only)")
                with gr.Accordion("custom part (category = custom)", open=False):
                    obj = gr.Textbox(label="object word", placeholder="metal bracket")
                    with gr.Row():
                        n_obj = gr.Number(value=1, precision=0, minimum=1, label="objects per image")
                        k = gr.Number(value=3, precision=0, minimum=1, label="K (max regions)")
                        area = gr.Number(value=0.3, minimum=0.0001, maximum=1, label="area ratio")
                    caps = gr.Textbox(lines=3, label="captions, one a line: caption | filter word",
                                      placeholder="scratch. dent. | bracket")
                run_btn = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column():
                msg = gr.Markdown(elem_id="message")
                overlay = gr.Image(label="anomaly map + regions", type="numpy", interactive=False,
                                   elem_id="result-image", format="png")
                saliency = gr.Image(label="saliency", type="numpy", interactive=False, elem_id="saliency-image",
                                    format="png")
                table = gr.Dataframe(headers=["caption", "status", "score", "re-scored", "box xyxy"],
                                     label="regions", interactive=False, elem_id="regions")
                files = gr.File(label="download the map (.npy float32, .png)", file_count="multiple",
                                elem_id="downloads")
        cfg_dd.change(lambda p: gr.update(choices=runner.categories(p) + [CUSTOM],
                                          value=(runner.categories(p) or [CUSTOM])[0]), cfg_dd, cat_dd)
        def guess_category(path, cfg_path, current):
            from .samples import category_of_sample

            if not path:
                return gr.update()
            found = category_of_sample(Path(path), runner.categories(cfg_path))
            return gr.update(value=found) if found else gr.update()

        image.upload(guess_category, [image, cfg_dd, cat_dd], cat_dd)
        sample.change(guess_category, [sample, cfg_dd, cat_dd], cat_dd)
        run_btn.click(lambda *a: run_once(runner, *a), [image, sample, cfg_dd, cat_dd, method, obj, n_obj, k, area, caps],
                      [overlay, saliency, table, msg, files])
    return app


def launch(config: Optional[str] = None, overrides: Sequence[str] = (), host: str = "127.0.0.1",
           port: int = 7860) -> None:
    from .errors import SaaError

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SaaError("the web UI needs Gradio: pip install -e '.[ui]'") from None
    app = build_app(config, overrides)
    print(f"saa ui: http://{host}:{port}  (Ctrl+C to stop)", flush=True)
    import inspect

    # gradio < 6 hides the API page with show_api=False; gradio 6 removed it (footer_links instead)
    no_api = {"show_api": False} if "show_api" in inspect.signature(app.launch).parameters else {"footer_links": []}
    app.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False,
                       max_file_size="50mb", quiet=True, **no_api)

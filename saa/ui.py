"""Local web UI (``saa ui``): Gradio, bound to 127.0.0.1 by default, nothing sent anywhere.

Upload an image (or pick a bundled sample), choose a config + category or describe your own part
(object word, objects per image, K, area ratio, captions), choose any registered method (or auto),
run, and see the anomaly map and regions on a colour bar, the regions table, the saliency, and
download the map (``.npy`` and ``.png``), the panels and the ``.json``. When the full pipeline's
model files are missing the UI says which and offers the lite method (saliency only).

Uploads are plain files that saa checks itself (:func:`upload_check`: type, size, pixel count,
decodable) as soon as they arrive, with a one-line message for a non-image, an oversize or a
corrupt file; the image is decoded once and run through :func:`saa.run.few.run_few` like ``saa
predict``'s.

Gradio analytics are switched off before Gradio is imported, the theme uses system fonts (no Google
Fonts request) and ``share`` is never enabled.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import numpy as np

log = logging.getLogger("saa.ui")

MAX_FILE_BYTES = 50 * 1024 * 1024  # saa ui --max-upload-mb changes it
MAX_PIXELS = None  # None: the limit of every image read, saa.image_io.max_pixels() (default 100 Mpx)
CUSTOM = "(custom: describe below)"
CUSTOM_KEY = "custom_part"
#: panels of the result picture (those the method can draw)
RESULT_PANELS = ("anomaly_map", "boxes")
PREVIEW_SIDE = 512


class InputRejected(ValueError):
    """An upload the UI does not process (not an image, too large, corrupt)."""


def _mb(n: float) -> str:
    """``50 MB``, ``1.5 MB``, ``200 KB``, ``100 bytes``."""
    for unit, size in (("MB", 2 ** 20), ("KB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{int(n)} bytes"


def check_upload(path: str | os.PathLike) -> None:
    """Raise :class:`InputRejected` for a non-image file, a file over :data:`MAX_FILE_BYTES` (50 MB
    unless ``saa ui --max-upload-mb`` says otherwise) or an image over the pixel limit of every
    image read (:func:`saa.image_io.max_pixels`, default 100 Mpx; sized from the header)."""
    from .errors import ImageReadError
    from .image_io import _limit_text, max_pixels, read_header

    p = Path(path)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        size_text, limit_text = _mb(size), _mb(MAX_FILE_BYTES)
        if size_text == limit_text:
            size_text, limit_text = f"{size:,} bytes", f"{limit_text} ({int(MAX_FILE_BYTES):,} bytes)"
        raise InputRejected(f"{p.name}: {size_text} is over the {limit_text} limit")
    try:
        header = read_header(p, check_limit=False)
    except ImageReadError:
        raise InputRejected(f"{p.name} is not an image file (PNG, JPEG, BMP, TIFF or WebP)") from None
    w, h = header.width, header.height
    limit = max_pixels() if MAX_PIXELS is None else int(MAX_PIXELS)
    if limit and w * h > limit:
        raise InputRejected(f"{p.name}: {w}x{h} = {w * h / 1e6:.0f} Mpx is over the {_limit_text(limit)} limit")


def read_upload(path: str | os.PathLike) -> np.ndarray:
    """The upload's pixels after :func:`check_upload`; a corrupt or truncated file is an
    :class:`InputRejected` naming the file (not the upload folder) and the problem."""
    from .errors import ImageReadError
    from .image_io import read_rgb

    check_upload(path)
    try:
        return read_rgb(path)
    except ImageReadError as e:
        raise InputRejected(str(e).replace(str(path), Path(path).name)) from None


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
    """Configs, the methods with their loaded models (cached), and the last checked upload."""

    def __init__(self, base_overrides: Sequence[str] = ()):
        self.base_overrides = list(base_overrides)
        self._methods: dict[Any, Any] = {}
        self._image: Optional[tuple[Any, np.ndarray]] = None
        self._lock = threading.Lock()

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
        """The registered method ``name`` (or an alias) for ``cfg``. Its models load once per
        (method, models section, out_size): a method built for another config of the same models
        (e.g. a custom part's prompts) hands its loaded ``pipeline`` over when it has one; any other
        method is cached per whole config."""
        from .methods import canonical_name
        from .run import make_method

        name = canonical_name(name)
        cfg = cfg.model_copy(update={"method": name})
        models_key = (name, cfg.models.model_dump_json(), int(cfg.out_size))
        full_key = models_key + (cfg.model_dump_json(),)
        with self._lock:
            if full_key in self._methods:
                return self._methods[full_key]
            shared = next((m for k, m in self._methods.items() if k[:3] == models_key), None)
            pipeline = getattr(shared, "pipeline", None)
            meth = make_method(cfg, pipeline=pipeline) if pipeline is not None else make_method(cfg)
            if len(self._methods) >= 8:  # a few configs at a time; the oldest goes
                self._methods.pop(next(iter(self._methods)))
            self._methods[full_key] = meth
            return meth

    def image(self, path: str) -> np.ndarray:
        """The checked upload (:func:`read_upload`), decoded once: the upload check keeps it for the
        run button."""
        p = Path(path)
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._image is not None and self._image[0] == key:
                return self._image[1]
        rgb = read_upload(p)
        with self._lock:
            self._image = (key, rgb)
        return rgb


def _outdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="saa_ui_"))
    return d


def _one_image_note(meth) -> str:
    return (f"Note: one image here, so method {meth.name} has no other image of its category to compare it with "
            "and does what it can alone (lite and the improved preset: single-image saliency); give it the "
            f"category's other images with `saa predict --method {meth.name} IMG1 IMG2 ...` or "
            f"`saa run CONFIG --method {meth.name}`.")


class _Shown(Exception):
    """A run-button outcome that is only a message (a refusal: nothing was run)."""


def _message_only(text: str):
    """The run button's outputs when there is nothing but a message to show."""
    return None, None, [], text, None


def _checked_input(runner: Runner, image_path: Optional[str], sample: Optional[str]) -> tuple[str, np.ndarray]:
    """The uploaded file (or bundled sample) and its pixels, decoded once at the upload check."""
    from .samples import SAMPLES_DIR

    src = image_path or (str(SAMPLES_DIR / sample) if sample else None)
    if not src:
        raise _Shown("**Upload an image or pick a sample first.**")
    try:
        return src, runner.image(src)
    except InputRejected as e:
        raise _Shown(f"**Rejected:** {e}") from None
    except OSError as e:
        raise _Shown(f"**Rejected:** {Path(src).name}: cannot read ({e.strerror or e})") from None


def _part(category: str, obj: str, n_objects: float, k_mask: float, area_ratio: float,
          captions: str) -> tuple[str, Optional[dict]]:
    """The category to run and, for the custom choice, the part described in the form."""
    if category != CUSTOM:
        return category, None
    if not obj.strip():
        raise _Shown("**Custom part:** type the object word first.")
    custom = {"object": obj.strip(), "n_objects": int(n_objects), "k_mask": int(k_mask),
              "area_ratio": float(area_ratio), "prompts": parse_captions(captions, obj.strip())
              or [["defect", obj.strip().split()[-1]]]}
    return CUSTOM_KEY, custom


def _chosen_method(runner: Runner, cfg, method: str) -> tuple[str, Any, list[str]]:
    """(the method used, the method, its note): auto picks by the model files present; a method
    whose files are missing is refused with saa's message."""
    from .errors import SaaError
    from .samples import choose_method, method_note, missing_model_files, require_model_files

    missing = missing_model_files(cfg)
    try:
        use = choose_method(method, missing)
        meth = runner.method(cfg, use)
        require_model_files(meth)
    except SaaError as e:
        raise _Shown("**Cannot run:** " + "  \n".join(str(e).splitlines())) from None
    note = method_note(method, use, missing, meth, chosen_with="the method choice")
    return use, meth, [note] if note else []


def _regions(pred, use: str) -> tuple[list[list[Any]], str]:
    """The regions table's rows and the line summing the prediction up."""
    from .samples import AUTO_DEFAULT

    rows: list[list[Any]] = []
    if not pred.has_regions:
        return rows, pred.summary() + "."
    for c in pred.defects:
        rows.append([c.caption, "kept" if c.kept else f"dropped ({c.dropped})",
                     round(c.score, 4), None if c.rescored is None else round(c.rescored, 4),
                     [round(v, 1) for v in c.box_xyxy].__repr__()])
    return rows, f"{'Full ' if use == AUTO_DEFAULT else ''}{pred.summary()} (green kept, grey/red dropped)."


def _downloads(out: Path, stem: str, res) -> list[str]:
    """The files offered for download: the map (.npy and a .png written here), the panels, the .json."""
    from .image_io import atomic_save_png
    from .run.few import OutputNames
    from .visualize import map_to_png

    png = OutputNames.file(out, stem, "map_png")
    atomic_save_png(png, map_to_png(res.prediction.anomaly_map_full))
    return [str(res.files["map"]), str(png), str(res.files["panels"]), str(res.files["json"])]


def _predict_one(meth, cat: str, src: str, rgb: np.ndarray) -> tuple[Any, Path, str]:
    """The image through :func:`saa.run.few.run_few` into a fresh folder: (its result, folder, stem)."""
    from .run.few import FewInput, FewOptions, OutputNames, run_few

    out = _outdir()
    stem = OutputNames().stem_for(Path(src).name)
    panels = tuple(k for k in RESULT_PANELS if k in meth.panels) or ("anomaly_map",)
    options = FewOptions(panels=panels, overlay=False, map_file="full", saliency_file=False,
                         keep_pictures=True, keep_arrays=True, panel_height=384)
    outcome = run_few(meth, cat, [FewInput(src, stem, rgb=rgb, name=Path(src).name)], out=out, options=options)
    return outcome.results[0], out, stem


def _run_checked(runner: Runner, src: str, rgb: np.ndarray, config_path: str, category: str, method: str,
                 part: tuple):
    """The run of a checked image: the outputs of the run button."""
    from .visualize import heat_overlay

    cat, custom = _part(category, *part)
    cfg = runner.config(config_path, custom)
    cfg.category(cat)
    use, meth, msg = _chosen_method(runner, cfg, method)
    res, out, stem = _predict_one(meth, cat, src, rgb)
    pred = res.prediction
    rows, summary = _regions(pred, use)
    msg.append(summary)
    if meth.needs_references:
        msg.append(_one_image_note(meth))
    msg.extend(f"Note: {n}" for n in pred.notes)  # e.g. cross-image saliency without other images
    files = _downloads(out, stem, res)
    sal = pred.saliency if "saliency" in meth.panels else None
    sal_img = heat_overlay(rgb, sal) if sal is not None else None
    return res.pictures["panels"], sal_img, rows, "\n\n".join(msg), files


def run_once(runner: Runner, image_path: Optional[str], sample: Optional[str], config_path: str, category: str,
             method: str, obj: str, n_objects: float, k_mask: float, area_ratio: float, captions: str):
    """The UI's run button: (result picture, saliency, regions rows, message, [downloads]). The
    image goes through :func:`saa.run.few.run_few` like ``saa predict``'s (decoded once: at the
    upload check)."""
    try:
        src, rgb = _checked_input(runner, image_path, sample)
    except _Shown as e:
        return _message_only(str(e))
    try:
        return _run_checked(runner, src, rgb, config_path, category, method,
                            (obj, n_objects, k_mask, area_ratio, captions))
    except _Shown as e:
        return _message_only(str(e))
    except Exception as e:  # shown in the UI, not a crash of the server
        log.exception("run failed")
        return _message_only(f"**Error:** {e}")


def upload_check(runner: Runner, path: Optional[str], sample: Optional[str] = None):
    """What the UI shows as soon as a file is uploaded (or a sample picked): (preview, message).
    Not an image, too large or corrupt: no preview and saa's one-line message."""
    from .samples import SAMPLES_DIR

    src = path or (str(SAMPLES_DIR / sample) if sample else None)
    if not src:
        return None, ""
    try:
        rgb = runner.image(src)
    except InputRejected as e:
        return None, f"**Rejected:** {e}"
    except OSError as e:
        return None, f"**Rejected:** {Path(src).name}: cannot read ({e.strerror or e})"
    h, w = rgb.shape[:2]
    s = min(1.0, PREVIEW_SIDE / max(h, w))
    preview = rgb if s == 1.0 else _resize(rgb, s)
    return preview, f"{Path(src).name}: {w}x{h} image, ready: press **Run**."


def _resize(rgb: np.ndarray, s: float) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)


def _choices(runner: Runner, config: Optional[str]) -> tuple[list[str], str, list[str], list[str]]:
    """(the configs offered, the first one, its categories, the bundled samples)."""
    from .samples import SAMPLES_DIR, default_config_path, sample_images

    configs = config_choices()
    first = str(config) if config else str(default_config_path())
    if first not in configs:
        configs.insert(0, first)
    return configs, first, runner.categories(first), [p.name for p in sample_images(SAMPLES_DIR)]


def _input_widgets(gr, configs: list[str], first: str, cats: list[str], samples: list[str]) -> SimpleNamespace:
    """The left column: the upload and its preview, sample, config, category, method, custom part, Run."""
    from .image_io import _limit_text, max_pixels
    from .samples import AUTO, method_choices

    limit = max_pixels() if MAX_PIXELS is None else int(MAX_PIXELS)
    w = SimpleNamespace()
    # a plain file upload: saa checks the file itself (type, size, pixels, decodable) and says
    # what is wrong in one line, instead of an image widget failing before saa sees it
    w.image = gr.File(label=f"image (PNG, JPEG, BMP, TIFF or WebP; ≤ {_mb(MAX_FILE_BYTES)}"
                            + (f", ≤ {_limit_text(limit)}" if limit else "") + ")",
                      file_count="single", type="filepath", elem_id="input-image")
    w.preview = gr.Image(label="the image", type="numpy", interactive=False, elem_id="input-preview",
                         format="png", height=260)
    w.sample = gr.Dropdown(choices=[""] + samples, value="", label="…or a bundled sample", elem_id="sample")
    w.cfg_dd = gr.Dropdown(choices=configs, value=first, label="dataset preset config", elem_id="config")
    w.cat_dd = gr.Dropdown(choices=cats + [CUSTOM], value=(cats[0] if cats else CUSTOM),
                           label="category", elem_id="category")
    w.method = gr.Radio(method_choices(), value=AUTO, label="method", elem_id="method",
                        info="auto: full SAA+ (saa) when its model files exist, else lite (saliency "
                             "only); every registered method is listed")
    w.part = _custom_part_widgets(gr)
    w.run_btn = gr.Button("Run", variant="primary", elem_id="run")
    return w


def _custom_part_widgets(gr) -> list:
    """The custom part's form: object word, objects per image, K, area ratio, captions."""
    with gr.Accordion("custom part (category = custom)", open=False):
        obj = gr.Textbox(label="object word", placeholder="metal bracket")
        with gr.Row():
            n_obj = gr.Number(value=1, precision=0, minimum=1, label="objects per image")
            k = gr.Number(value=3, precision=0, minimum=1, label="K (max regions)")
            area = gr.Number(value=0.3, minimum=0.0001, maximum=1, label="area ratio")
        caps = gr.Textbox(lines=3, label="captions, one a line: caption | filter word",
                          placeholder="scratch. dent. | bracket")
    return [obj, n_obj, k, area, caps]


def _output_widgets(gr) -> SimpleNamespace:
    """The right column: message, result picture, saliency, regions table, downloads."""
    w = SimpleNamespace()
    w.msg = gr.Markdown(elem_id="message")
    # no label badge over the picture: it would hide the score line at its top
    w.overlay = gr.Image(label="anomaly map + regions", show_label=False, type="numpy",
                         interactive=False, elem_id="result-image", format="png")
    w.saliency = gr.Image(label="saliency", type="numpy", interactive=False, elem_id="saliency-image",
                          format="png")
    w.table = gr.Dataframe(headers=["caption", "status", "score", "re-scored", "box xyxy"],
                           label="regions", interactive=False, elem_id="regions")
    w.files = gr.File(label="download: the map (.npy float32, .png), the panels, the .json",
                      file_count="multiple", elem_id="downloads")
    return w


def _wire(gr, runner: Runner, i: SimpleNamespace, o: SimpleNamespace) -> None:
    """The events: a config lists its categories, an upload or sample is checked, Run runs."""
    i.cfg_dd.change(lambda p: gr.update(choices=runner.categories(p) + [CUSTOM],
                                        value=(runner.categories(p) or [CUSTOM])[0]), i.cfg_dd, i.cat_dd)

    def checked(path, sample_name, cfg_path):
        from .samples import category_of_sample

        shown, text = upload_check(runner, path, None if path else sample_name)
        src = path or sample_name
        found = category_of_sample(Path(src), runner.categories(cfg_path)) if src and shown is not None else None
        return shown, text, (gr.update(value=found) if found else gr.update())

    i.image.upload(checked, [i.image, i.sample, i.cfg_dd], [i.preview, o.msg, i.cat_dd])
    i.image.clear(lambda: (None, ""), None, [i.preview, o.msg])
    i.sample.change(lambda name, cfg_path: checked(None, name, cfg_path), [i.sample, i.cfg_dd],
                    [i.preview, o.msg, i.cat_dd])
    i.run_btn.click(lambda *a: run_once(runner, *a), [i.image, i.sample, i.cfg_dd, i.cat_dd, i.method, *i.part],
                    [o.overlay, o.saliency, o.table, o.msg, o.files])


def build_app(config: Optional[str] = None, overrides: Sequence[str] = ()):
    """The Gradio app of ``saa ui`` (not started): the input column, the result column, the events."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    runner = Runner(overrides)
    configs, first, cats, samples = _choices(runner, config)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no Google Fonts
    with gr.Blocks(title="saa — zero-shot anomaly segmentation", theme=theme, analytics_enabled=False) as app:
        gr.Markdown("## saa — zero-shot anomaly segmentation (SAA+)\nEverything runs on this machine.")
        with gr.Row():
            with gr.Column():
                inputs = _input_widgets(gr, configs, first, cats, samples)
            with gr.Column():
                outputs = _output_widgets(gr)
        _wire(gr, runner, inputs, outputs)
    return app


def launch(config: Optional[str] = None, overrides: Sequence[str] = (), host: str = "127.0.0.1",
           port: int = 7860, max_upload_mb: Optional[float] = None) -> None:
    """Start the UI. ``max_upload_mb``: saa's upload limit (default 50); Gradio's own limit is set
    four times higher, so that a file over saa's limit reaches saa and gets its message."""
    global MAX_FILE_BYTES
    from .errors import SaaError

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SaaError("the web UI needs Gradio: pip install -e '.[ui]'") from None
    if max_upload_mb is not None:
        if not (max_upload_mb > 0 and np.isfinite(max_upload_mb)):
            raise SaaError(f"--max-upload-mb must be a positive number, got {max_upload_mb}")
        MAX_FILE_BYTES = int(max_upload_mb * 2 ** 20)
    app = build_app(config, overrides)
    print(f"saa ui: http://{host}:{port}  (Ctrl+C to stop)", flush=True)
    import inspect

    # gradio < 6 hides the API page with show_api=False; gradio 6 removed it (footer_links instead)
    no_api = {"show_api": False} if "show_api" in inspect.signature(app.launch).parameters else {"footer_links": []}
    app.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False,
                       max_file_size=4 * MAX_FILE_BYTES, quiet=True, **no_api)

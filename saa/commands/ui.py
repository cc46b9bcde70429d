"""``saa ui``: a local web UI (Gradio) to try the method on one image."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "ui", help="local web UI (needs the `ui` extra: pip install -e '.[ui]')",
        description="Start a local Gradio web UI: upload an image or pick a bundled sample, choose a config and "
                    "category (or describe your own part) and any registered method, run, see the map with its "
                    "colour bar, the regions and the saliency, download the map. Uploads that are not images, too "
                    "large or corrupt are refused with a one-line message. Binds to 127.0.0.1 unless --host says "
                    "otherwise; nothing is sent anywhere.")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="config preselected in the UI (default configs/mvtec.yaml); configs/*.yaml are offered")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field for every run of the UI (repeatable)")
    p.add_argument("--device", default=None, help="shortcut for --set models.device=DEVICE")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, default=None, metavar="MB",
                   help="largest upload saa accepts, in MB (default 50); a larger file gets saa's one-line message "
                        "(Gradio itself refuses files over 4 times this limit)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..ui import launch
    from . import overrides_of

    launch(config=args.config, overrides=overrides_of(args), host=args.host, port=args.port,
           max_upload_mb=args.max_upload_mb)
    return 0

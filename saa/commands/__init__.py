"""Sub-commands of the ``saa`` CLI (see :mod:`saa.cli`)."""


def add_config_args(p, config_required: bool = True) -> None:
    """The options every model-running command shares."""
    p.add_argument("--config", required=config_required, metavar="YAML",
                   help="config file, e.g. configs/mvtec.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set models.device=cuda (repeatable)")
    p.add_argument("--device", default=None, help="shortcut for --set models.device=DEVICE")
    add_preset_arg(p)


def add_preset_arg(p) -> None:
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="behaviour preset: official (the authors' code, default), paper (the paper's formulas) or "
                        "improved (ours: paper + cross-image saliency); shortcut for --set preset=NAME")


def preset_override(args) -> list[str]:
    """``--preset NAME`` as a ``--set`` override ([] when not given)."""
    return [f"preset={args.preset}"] if getattr(args, "preset", None) else []


def overrides_of(args, with_method: bool = True) -> list[str]:
    ov = list(args.overrides)
    if getattr(args, "device", None):
        ov.append(f"models.device={args.device}")
    return ov + preset_override(args) + (method_override(args) if with_method else [])


def add_method_arg(p) -> None:
    p.add_argument("--method", default=None, metavar="NAME",
                   help="the method: saa (SAA+: Grounding DINO + SAM + saliency; the default, also called full), "
                        "lite (ours: no foundation models, each image scored against the other images of its "
                        "category with EfficientNet-Lite0 features) or a registered plug-in; "
                        "shortcut for --set method=NAME")


def method_override(args) -> list[str]:
    """``--method NAME`` as a ``--set`` override ([] when not given)."""
    import json

    return [f"method={json.dumps(args.method)}"] if getattr(args, "method", None) else []

#!/usr/bin/env python
"""The authors' SAA+ code (caoyunkang/Segment-Any-Anomaly, branch SAA-plus, commit 23acbd9) timed on
the same random-weight files and images as ``scripts/benchmark.py``: images/s, peak GPU memory and
its anomaly maps (``--maps``, keyed ``<defect type>/<file name>`` like the benchmark's
``--reference-maps``).

    python scripts/bench_authors.py --snapshot .authors --files files.json --images IMG... \\
        --device cuda --out authors.json --maps authors_maps.npz

``--snapshot``: a copy of the authors' repository (``scripts/prepare_device.sh`` stages its
``SAA/``, ``GroundingDINO/groundingdino/`` and ``SAM/segment_anything/`` into ``.authors/``).
``--files``: the JSON of ``scripts/benchmark.py --build-only`` (the model files). Run it in an
environment where the authors' code runs (transformers < 5: ``device_gpu_bench.sh`` puts the
carried transformers 4.57 first on the path for this script only).

The code is run unmodified, as ``eval_SAA.py`` drives it (``SAA.Model``, the general + MVTec
bottle prompts, the property prompt, BGR images read with ``cv2.imread``), except where it cannot
run here, each said in the output:

* its ``ModelINet`` builds ``wide_resnet50_2`` with ``pretrained=True`` (a download): the model
  is built with ``pretrained=False`` and the random file loaded instead;
* its Grounding DINO copy is not compiled (no ``_C`` extension; the authors build it with
  ``pip install -e GroundingDINO``): the deformable attention runs the package's PyTorch path
  (``multi_scale_deformable_attn_pytorch``), which is what it runs on a CPU;
* its Grounding DINO copy builds BERT only from a hub name (``bert-base-uncased``): the model
  files' local BERT folder is loaded from that folder (``patch_text_encoder``);
* ``build_sam`` builds ViT-H, so the SAM file must be a ViT-H one (``benchmark.py --sam vit_h``).

An image on which the code fails (it does when no object box survives) is listed in
``failed_images`` and has no map; images/s counts every image given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

NOTES: list[str] = []


def note(text: str) -> None:
    NOTES.append(text)
    print("bench_authors:", text, file=sys.stderr, flush=True)


def import_authors(snapshot: Path):
    """The authors' ``SAA`` package, imported from ``snapshot`` (their Grounding DINO and SAM copies
    first on the path, as ``pip install -e`` of them would make them)."""
    for sub in ("SAM", "GroundingDINO", ""):
        sys.path.insert(0, str(snapshot / sub) if sub else str(snapshot))
    missing = [p for p in ("SAA/model.py", "GroundingDINO/groundingdino", "SAM/segment_anything")
               if not (snapshot / p).exists()]
    if missing:
        raise SystemExit(f"bench_authors: {snapshot} is not the authors' repository (missing {', '.join(missing)})")
    import SAA  # noqa: E402  (the authors' package)

    return SAA


def patch_backbone(saliency_checkpoint: str, backbone: str = "wide_resnet50_2") -> None:
    """``timm.create_model(..., pretrained=True)`` in the authors' ModelINet -> the random file."""
    import timm
    import torch

    import SAA.modelinet as modelinet

    real = timm.create_model

    def create_model(model_name, pretrained=False, checkpoint_path="", **kwargs):
        model = real(model_name, pretrained=False, **kwargs)
        if pretrained:
            sd = torch.load(saliency_checkpoint, map_location="cpu")
            own = model.state_dict()
            model.load_state_dict({k: sd[k] for k in own}, strict=True)
            note(f"ModelINet: {model_name} built with pretrained=False, weights from {saliency_checkpoint}")
        return model

    modelinet.timm = type("timm_patched", (), {"create_model": staticmethod(create_model)})


def patch_text_encoder() -> None:
    """The authors' Grounding DINO copy builds its BERT only from a hub NAME (``bert-base-uncased`` /
    ``roberta-base``; anything else is a ValueError): a local BERT folder (the random one of the
    model files) is loaded from that folder instead, as the newer ``groundingdino`` package does."""
    import os

    from groundingdino.util import get_tokenlizer

    real = get_tokenlizer.get_pretrained_language_model

    def get_pretrained_language_model(text_encoder_type):
        if isinstance(text_encoder_type, str) and os.path.isdir(text_encoder_type):
            note(f"Grounding DINO: text encoder loaded from the folder {text_encoder_type} (its copy takes only "
                 "hub names)")
            return get_tokenlizer.BertModel.from_pretrained(text_encoder_type)
        return real(text_encoder_type)

    get_tokenlizer.get_pretrained_language_model = get_pretrained_language_model


def patch_deformable_attention() -> None:
    """Where the authors' Grounding DINO has no compiled ``_C``, run its PyTorch path everywhere."""
    patched = []
    for name, mod in list(sys.modules.items()):
        fn = getattr(mod, "MultiScaleDeformableAttnFunction", None)
        pytorch = getattr(mod, "multi_scale_deformable_attn_pytorch", None)
        if fn is None or pytorch is None or getattr(mod, "_C", None) is not None:
            continue

        def apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step,
                  _pytorch=pytorch):
            return _pytorch(value, spatial_shapes, sampling_locations, attention_weights)

        fn.apply = staticmethod(apply)
        patched.append(name)
    if patched:
        note("Grounding DINO compiled op _C missing: deformable attention runs its PyTorch path "
             f"(multi_scale_deformable_attn_pytorch; {', '.join(sorted(patched))})")
    else:
        note("Grounding DINO: no uncompiled MultiScaleDeformableAttnFunction found to patch "
             "(the compiled op is present, or the code has no such function)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", required=True, help="the authors' repository (a copy)")
    ap.add_argument("--files", required=True, help="JSON of scripts/benchmark.py --build-only")
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--dataset", default="mvtec")
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out-size", type=int, default=400)
    ap.add_argument("--box-threshold", type=float, default=0.1)
    ap.add_argument("--text-threshold", type=float, default=0.1)
    ap.add_argument("--out", required=True, help="JSON results")
    ap.add_argument("--maps", required=True, help=".npz of the anomaly maps")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import torch

    result = {"program": "authors (SAA-plus @23acbd9)", "snapshot": str(args.snapshot), "device": args.device,
              "images": len(args.images), "notes": NOTES}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    try:
        import transformers

        result["transformers"] = transformers.__version__
    except ImportError:
        pass
    result["torch"] = torch.__version__

    try:
        return run(args, result)
    except BaseException as e:  # the summary says why the part failed (the traceback is in the log)
        result["error"] = f"{type(e).__name__}: {e}"
        Path(args.out).write_text(json.dumps(result, indent=1))
        raise


def run(args, result: dict) -> int:
    import cv2
    import torch

    files = json.loads(Path(args.files).read_text())["files"]
    t0 = time.perf_counter()
    SAA = import_authors(Path(args.snapshot))
    patch_backbone(files["saliency_checkpoint"])
    patch_text_encoder()
    model = SAA.Model(dino_config_file=files["grounding_config"], dino_checkpoint=files["grounding_checkpoint"],
                      sam_checkpoint=files["sam_checkpoint"], box_threshold=args.box_threshold,
                      text_threshold=args.text_threshold, out_size=args.out_size, device=args.device)
    general = SAA.build_general_prompts(args.category)
    manual = SAA.manul_prompts[args.dataset][args.category]
    model.set_ensemble_text_prompts(general + manual, verbose=False)
    model.set_property_text_prompts(SAA.property_prompts[args.dataset][args.category], verbose=False)
    model = model.to(args.device)
    patch_deformable_attention()
    result["model_load_s"] = time.perf_counter() - t0
    result["captions_per_image"] = 1 + len(general) + len(manual)

    cuda = args.device.startswith("cuda")

    def predict(path):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, as the authors' data loaders read
        with torch.no_grad():
            anomaly_map, _ = model(image)
        return np.asarray(anomaly_map, dtype=np.float64)

    predict(args.images[0])  # warm-up (allocator, kernels), untimed
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    maps, failed = {}, {}
    t0 = time.perf_counter()
    for path in args.images:
        key = f"{Path(path).parent.name}/{Path(path).name}"
        try:
            maps[key] = predict(path)
        except Exception as e:  # e.g. its crash when no object box survives (shared/fidelity/README.md, 4.)
            failed[key] = f"{type(e).__name__}: {e}"
            note(f"{key}: the authors' code failed: {failed[key]}")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result.update(seconds=seconds, images_per_s=len(args.images) / seconds, failed_images=failed,
                  peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None)
    np.savez_compressed(args.maps, **maps)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

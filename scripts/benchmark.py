#!/usr/bin/env python
"""Throughput, per-stage time and memory of the pipeline, optionally beside the straightforward
schedule of the authors' code (``--baseline``), in one process.

    python scripts/benchmark.py --models realsize --sam vit_b --images 5 --baseline --exact --out bench.json
    python scripts/benchmark.py --models tiny --images 3

Model sets (random weights; never downloaded):
  tiny      saa.testing's tiny models (seconds per image)
  realsize  real architectures: Grounding DINO Swin-T OGC (6+6 layers, 900 queries, BERT-base-sized
            text encoder) and SAM ViT-B/L/H, with the wide_resnet50_2 saliency backbone; the
            detector is calibrated like the tiny one so a realistic number of boxes passes 0.1
  DIR       a folder with the files named like install.sh writes them (real weights)

Images: real MVTec bottle images from ../shared/realdata by default (``--image-glob``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_realsize(out: Path, sam: str, seed: int = 0) -> list[str]:
    """Random-weight files of the real architectures (cached in ``out``)."""
    from saa import testing as T

    out.mkdir(parents=True, exist_ok=True)
    bert, cfg, dino = out / "bert", out / "GroundingDINO_SwinT_OGC_random.py", out / "groundingdino_swint_random.pth"
    sam_ck, wrn = out / f"sam_{sam}_random.pth", out / "wide_resnet50_2_random.pth"
    if not (bert / "config.json").exists():
        from transformers import BertConfig, BertModel, BertTokenizerFast

        vocab = T.build_vocab()
        bert.mkdir(exist_ok=True)
        (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=12,
                             num_attention_heads=12, intermediate_size=3072)).save_pretrained(bert)
        BertTokenizerFast(vocab_file=str(bert / "vocab.txt"), do_lower_case=True).save_pretrained(bert)
    if not dino.exists():
        over = {"text_encoder_type": str(bert), "use_checkpoint": False, "use_transformer_ckpt": False}
        cfg.write_text("\n".join(f"{k} = {over.get(k, v)!r}" for k, v in T._SWINT_OGC_VALUES) + "\n")
        state, report = T._build_grounding(cfg, seed, T.synthetic_image())
        torch.save(state, dino)
        print(f"built real-size Grounding DINO (logit bias {report['dino_logit_bias']})", file=sys.stderr)
    if not sam_ck.exists():
        from segment_anything import sam_model_registry

        torch.manual_seed(seed)
        torch.save(sam_model_registry[sam]().state_dict(), sam_ck)
    if not wrn.exists():
        import timm

        torch.manual_seed(seed)
        torch.save(timm.create_model("wide_resnet50_2", pretrained=False).state_dict(), wrn)
    return [f"models.grounding.config={cfg}", f"models.grounding.checkpoint={dino}",
            f"models.grounding.text_encoder={bert}", f"models.sam.checkpoint={sam_ck}",
            "models.saliency.backbone=wide_resnet50_2", f"models.saliency.checkpoint={wrn}"]


def model_overrides(args) -> list[str]:
    if args.models == "tiny":
        from saa.testing import build_tiny_models, tiny_config_overrides

        return tiny_config_overrides(build_tiny_models(Path(args.cache) / "tiny"))
    if args.models == "realsize":
        return build_realsize(Path(args.cache) / "realsize", args.sam)
    return [f"models.weights_dir={args.models}"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_schedule(pipe, images, category, label):
    from saa.image_io import read_rgb

    stages: dict[str, float] = {}
    maps = []
    if pipe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_all = time.perf_counter()
    for path in images:
        t0 = time.perf_counter()
        rgb = read_rgb(path)
        stages["io"] = stages.get("io", 0.0) + time.perf_counter() - t0
        pred = pipe.predict(rgb, category)
        for k, v in pred.timings.items():
            stages[k] = stages.get(k, 0.0) + v
        maps.append(pred.anomaly_map)
    total = time.perf_counter() - t_all
    n_calls = 1 + len(pipe.config.language_prompts(category))
    res = {
        "schedule": label,
        "images": len(images),
        "seconds": total,
        "images_per_s": len(images) / total,
        "stage_seconds": stages,
        "detector_heads_per_caption_s": (stages.get("detector_object", 0) + stages.get("detector_defect", 0))
        / (len(images) * n_calls),
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if pipe.device.type == "cuda" else None,
    }
    return res, maps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny", help="tiny | realsize | a weights folder")
    ap.add_argument("--sam", default="vit_b", choices=["vit_b", "vit_l", "vit_h"], help="SAM size for realsize")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--image-glob", default=str(REPO.parent / "shared/realdata/mvtec_ad__*/bottle/test/*/*.png"))
    ap.add_argument("--config", default=str(REPO / "configs/mvtec.yaml"))
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
    ap.add_argument("--baseline", action="store_true",
                    help="also run the straightforward schedule and report the ratio and map difference")
    ap.add_argument("--exact", action="store_true",
                    help="also run our schedule with the package's own detector kernels "
                         "(models.grounding.kernels=reference): the schedule alone, bit-exact")
    ap.add_argument("--kernels", default="fast", choices=["fast", "reference"],
                    help="detector kernels of the main 'saa' schedule")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--cache", default=os.environ.get("SAA_BENCH_CACHE", str(Path(tempfile.gettempdir()) / "saa_bench")))
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import glob
    import warnings

    warnings.filterwarnings("ignore")
    from saa.baseline import (FullForwardDetector, cross_object_saliency_loops,
                              self_similarity_saliency_sorted)
    from saa.config import load_config
    from saa.pipeline import SAAPipeline

    images = sorted(glob.glob(args.image_glob))
    if not images:
        ap.error(f"no images match {args.image_glob}")
    step = max(1, len(images) // args.images)
    images = images[::step][: args.images]
    ov = model_overrides(args) + [f"models.device={args.device}", f"models.precision={args.precision}",
                                  f"models.grounding.kernels={args.kernels}"]
    cfg = load_config(args.config, ov)

    t0 = time.perf_counter()
    fast = SAAPipeline(cfg).load_models()
    load_s = time.perf_counter() - t0
    fast.predict(images[0], args.category)  # warm-up (allocator, lazy inits)
    result = {"models": args.models, "sam": args.sam if args.models == "realsize" else None,
              "device": args.device, "precision": args.precision, "threads": torch.get_num_threads(),
              "category": args.category, "model_load_s": load_s, "image_files": images}
    res_fast, maps_fast = run_schedule(fast, images, args.category, "saa")
    result["saa"] = res_fast

    def max_diff(a_maps, b_maps) -> float:
        return float(max(np.abs(a - b).max() for a, b in zip(a_maps, b_maps)))

    maps_exact = None
    if args.exact and args.kernels != "reference":
        from saa.models.grounding import GroundingDetector

        exact = SAAPipeline(cfg, refiner=fast.refiner, extractor=fast.extractor)
        g = cfg.models.grounding
        exact._detector = GroundingDetector(cfg.resolve_path(g.config), cfg.resolve_path(g.checkpoint),
                                            cfg.resolve_path(g.text_encoder), fast.device, kernels="reference")
        res_exact, maps_exact = run_schedule(exact, images, args.category, "saa_exact")
        result["saa_exact"] = res_exact
        result["max_abs_map_diff_saa_vs_exact"] = max_diff(maps_fast, maps_exact)

    if args.baseline:
        base = SAAPipeline(cfg, refiner=fast.refiner, extractor=fast.extractor)
        g = cfg.models.grounding
        base._detector = FullForwardDetector(cfg.resolve_path(g.config), cfg.resolve_path(g.checkpoint),
                                             cfg.resolve_path(g.text_encoder), fast.device)
        base.single_saliency = lambda f, n, neighbors: self_similarity_saliency_sorted(f, n, neighbors)
        base.multi_saliency = cross_object_saliency_loops
        res_base, maps_base = run_schedule(base, images, args.category, "baseline")
        result["baseline"] = res_base
        result["speedup"] = res_fast["images_per_s"] / res_base["images_per_s"]
        result["max_abs_map_diff"] = max_diff(maps_fast, maps_base)
        if maps_exact is not None:
            result["speedup_exact"] = result["saa_exact"]["images_per_s"] / res_base["images_per_s"]
            result["max_abs_map_diff_exact"] = max_diff(maps_exact, maps_base)

        # the saliency step alone, on this image's real feature grid
        from saa.image_io import read_rgb
        from saa.saliency import self_similarity_saliency

        import cv2
        feats = fast.extractor(cv2.resize(read_rgb(images[0])[:, :, ::-1].copy(), (256, 256)), 256)
        t0 = time.perf_counter(); a = self_similarity_saliency(feats); t_fast = time.perf_counter() - t0
        t0 = time.perf_counter(); b = self_similarity_saliency_sorted(feats); t_sort = time.perf_counter() - t0
        result["single_saliency"] = {"topk_s": t_fast, "full_sort_s": t_sort, "speedup": t_sort / t_fast,
                                     "max_abs_diff": float(np.abs(a - b).max())}

    print(json.dumps({k: v for k, v in result.items() if k != "image_files"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

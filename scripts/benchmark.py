#!/usr/bin/env python
"""Throughput, per-stage time and memory of the pipeline, optionally beside the straightforward
schedule of the authors' code (``--baseline``), in one process.

    python scripts/benchmark.py --models realsize --sam vit_b --images 5 --baseline --exact --out bench.json
    python scripts/benchmark.py --models tiny --images 3
    python scripts/benchmark.py --models realsize --saliency-only   # saliency steps vs the loops/sort
    python scripts/benchmark.py --models realsize --sam vit_h --device cuda --compare-precision bf16,fp16
    python scripts/benchmark.py --models realsize --images 3 --backend groundingdino,transformers --kernels reference
    python scripts/benchmark.py --models fidelity --threads 2 --baseline --exact   # the issue-16 setting
    python scripts/benchmark.py --models realsize --sam vit_h --device cuda --images 8 --batch-sizes 8 \
        --compare-precision bf16 --exact --baseline --reference-maps authors_maps.npz   # the GPU check
    python scripts/benchmark.py --models realsize --sam vit_h --build-only --out files.json   # files only

Model sets (random weights; never downloaded):
  tiny      saa.testing's tiny models (seconds per image)
  realsize  real architectures: Grounding DINO Swin-T OGC (6+6 layers, 900 queries, BERT-base-sized
            text encoder) and SAM ViT-B/L/H, with the wide_resnet50_2 saliency backbone; the
            detector is calibrated like the tiny one so a realistic number of boxes passes 0.1
  fidelity  the random-weight files of ../shared/fidelity (Swin-T Grounding DINO with 2+2
            encoder/decoder layers, the small SAM, full wide_resnet50_2), built with its
            make_checkpoints.py into the cache; default images: the bottle images
            broken_large/003.png and contamination/007.png
  DIR       a folder with the files named like install.sh writes them (real weights)

Images: real MVTec bottle images from ../shared/realdata by default (``--image-glob``), or the
files named with ``--image-files``. A per-stage table (seconds per image, ``Prediction.timings``)
of every schedule run is printed to stderr after the JSON. ``--batch-sizes`` adds runs of
``SAAPipeline.predict_batch`` (images decoded ahead in worker processes, as ``saa run --batch-size``
does); ``--reference-maps`` (an ``.npz`` of maps keyed ``<defect type>/<file name>``, e.g. the
authors' code's from ``scripts/bench_authors.py``) adds each schedule's largest map difference to
them; with ``--baseline`` every schedule also gets its difference to the straightforward schedule.
``--out`` is rewritten after every schedule, so a run stopped by a time limit keeps what it measured.
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
        from transformers import BertConfig, BertModel

        vocab = T.build_vocab()
        bert.mkdir(exist_ok=True)
        (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=12,
                             num_attention_heads=12, intermediate_size=3072)).save_pretrained(bert)
        T.write_bert_tokenizer(bert)
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


FIDELITY = REPO.parent / "shared" / "fidelity"
FIDELITY_IMAGES = ("mvtec_ad__*/bottle/test/broken_large/003.png", "mvtec_ad__*/bottle/test/contamination/007.png")


def build_fidelity(out: Path) -> list[str]:
    """The fidelity kit's random-weight files (cached in ``out``), built as
    tests/methods/saa_plus/test_pipeline_fidelity.py builds them."""
    import subprocess

    if not (out / "manifest.json").is_file():
        if not (FIDELITY / "make_checkpoints.py").is_file():
            raise SystemExit(f"--models fidelity: {FIDELITY / 'make_checkpoints.py'} not found")
        subprocess.run([sys.executable, "-m", "saa.models.compat", str(FIDELITY / "make_checkpoints.py"), str(out),
                        "--seed", "0", "--vocab", str(FIDELITY / "vocab.txt"),
                        "--dino-logit-bias", "4.787512335209755"], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
        from saa.testing import write_bert_tokenizer

        write_bert_tokenizer(out / "bert")
    return [f"models.grounding.config={out}/GroundingDINO_SwinT_OGC_tiny.py",
            f"models.grounding.checkpoint={out}/groundingdino_random.pth",
            f"models.grounding.text_encoder={out}/bert", f"models.sam.checkpoint={out}/sam_small.pth",
            "models.saliency.backbone=wide_resnet50_2", f"models.saliency.checkpoint={out}/wide_resnet50_2_random.pth"]


def files_of(overrides: list[str]) -> dict[str, str]:
    """The model files of ``--set``-style overrides, by role (``--build-only``'s JSON)."""
    roles = {"models.grounding.config": "grounding_config", "models.grounding.checkpoint": "grounding_checkpoint",
             "models.grounding.text_encoder": "text_encoder", "models.sam.checkpoint": "sam_checkpoint",
             "models.saliency.checkpoint": "saliency_checkpoint", "models.saliency.backbone": "saliency_backbone"}
    out = {}
    for o in overrides:
        key, _, value = o.partition("=")
        if key in roles:
            out[roles[key]] = value
    return out


def model_overrides(args) -> list[str]:
    if args.models == "fidelity":
        return build_fidelity(Path(args.cache) / "fidelity")
    if args.models == "tiny":
        from saa.testing import build_tiny_models, tiny_config_overrides

        return tiny_config_overrides(build_tiny_models(Path(args.cache) / "tiny"))
    if args.models == "realsize":
        return build_realsize(Path(args.cache) / "realsize", args.sam)
    return [f"models.weights_dir={args.models}"]


BACKEND_SETS = ("groundingdino", "transformers")


def backend_overrides(name: str, variant: str = "sam") -> list[str]:
    if name == "groundingdino":
        return ["models.grounding.backend=groundingdino", "models.sam.backend=segment_anything", "models.sam.variant=sam"]
    return ["models.grounding.backend=transformers", "models.sam.backend=transformers", f"models.sam.variant={variant}"]


def batched_captions(pipe, image_path: str, category: str) -> "dict | None":
    """The captions of one image through the detector one by one and (where the backend can) as
    one batch: seconds and the largest output difference."""
    from saa.image_io import read_rgb

    det = pipe.detector
    caps = [pipe.config.category(category).object] + [c for c, _ in pipe.config.language_prompts(category)]
    with torch.no_grad():
        det.set_image(read_rgb(image_path))
        try:
            t0 = time.perf_counter()
            one = [det.detect(c) for c in caps]
            t_one = time.perf_counter() - t0
            if not hasattr(det, "detect_many"):
                return {"captions": len(caps), "sequential_s": t_one, "batched_s": None}
            t0 = time.perf_counter()
            many = det.detect_many(caps)
            t_many = time.perf_counter() - t0
        finally:
            det.reset_image()
    return {"captions": len(caps), "sequential_s": t_one, "batched_s": t_many,
            "max_abs_box_diff": float(max((a.boxes - b.boxes).abs().max() for a, b in zip(one, many))),
            "max_abs_prob_diff": float(max((a.token_probs - b.token_probs).abs().max() for a, b in zip(one, many)))}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_schedule(pipe, images, category, label):
    from saa.image_io import read_rgb

    stages: dict[str, float] = {}
    maps = []
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
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
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t_all
    n_calls = 1 + len(pipe.config.language_prompts(category))
    res = {
        "schedule": label,
        "batch_size": 1,
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


def run_batched(pipe, images, category, label, batch: int):
    """:func:`run_schedule` with ``batch`` images per :meth:`SAAPipeline.predict_batch`, the images
    decoded ahead in worker processes (what ``saa run --batch-size`` does). No warm-up of its own:
    it runs after a schedule of one image at a time (the lazy initialisations are done)."""
    from saa.run.engine import decode_workers, decoded_batches

    cuda = pipe.device.type == "cuda"
    stages: dict[str, float] = {}
    maps = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t_all = time.perf_counter()
    for chunk in decoded_batches(images, batch, decode_workers(batch)):
        for pred in pipe.predict_batch([rgb for _, rgb in chunk], category):
            for k, v in pred.timings.items():
                stages[k] = stages.get(k, 0.0) + v
            maps.append(pred.anomaly_map)
    if cuda:
        torch.cuda.synchronize()
    total = time.perf_counter() - t_all
    n_calls = 1 + len(pipe.config.language_prompts(category))
    res = {
        "schedule": label,
        "batch_size": batch,
        "images": len(images),
        "seconds": total,
        "images_per_s": len(images) / total,
        "stage_seconds": stages,
        "detector_heads_per_caption_s": (stages.get("detector_object", 0) + stages.get("detector_defect", 0))
        / (len(images) * n_calls),
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    return res, maps


def image_key(path) -> str:
    """``<defect type>/<file name>``: how maps of the same image are matched across programs."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def run_interleaved(runs, images, category) -> dict:
    """Several schedules image by image, in turn (the order reversed every image): label ->
    (result, maps) as :func:`run_schedule` gives them."""
    parts = {label: [] for label, _ in runs}
    for i, path in enumerate(images):
        for label, pipe in (runs if i % 2 == 0 else runs[::-1]):
            parts[label].append(run_schedule(pipe, [path], category, label))
    out = {}
    for label, got in parts.items():
        res = dict(got[-1][0])
        res["images"] = len(images)
        res["seconds"] = sum(r["seconds"] for r, _ in got)
        res["images_per_s"] = len(images) / res["seconds"]
        res["stage_seconds"] = {k: sum(r["stage_seconds"].get(k, 0.0) for r, _ in got)
                                for k in got[0][0]["stage_seconds"]}
        res["detector_heads_per_caption_s"] = float(np.mean([r["detector_heads_per_caption_s"] for r, _ in got]))
        res["interleaved"] = True
        out[label] = (res, [m for _, maps in got for m in maps])
    return out


def exact_pipe(cfg, fast):
    """Our schedule with the package's own detector kernels (``models.grounding.kernels=reference``)."""
    from saa.models.grounding import GroundingDetector
    from saa.methods.saa_plus import SAAPipeline

    exact = SAAPipeline(cfg, refiner=fast.refiner, extractor=fast.extractor)
    g = cfg.models.grounding
    exact._detector = GroundingDetector(cfg.resolve_path(g.config), cfg.resolve_path(g.checkpoint),
                                        cfg.resolve_path(g.text_encoder), fast.device, kernels="reference")
    return exact


def baseline_pipe(cfg, fast):
    """The authors' schedule: the whole detector per caption, the full sort and per-pixel loops of
    the saliency, every full-size mask and the object masks always."""
    from saa.models.full_forward import FullForwardDetector
    from saa.saliency.reference import cross_object_saliency_loops, self_similarity_saliency_sorted
    from saa.methods.saa_plus import SAAPipeline

    base = SAAPipeline(cfg, refiner=fast.refiner, extractor=fast.extractor)
    g = cfg.models.grounding
    base._detector = FullForwardDetector(cfg.resolve_path(g.config), cfg.resolve_path(g.checkpoint),
                                         cfg.resolve_path(g.text_encoder), fast.device)
    base.single_saliency = lambda f, n, neighbors: self_similarity_saliency_sorted(f, n, neighbors)
    base.multi_saliency = cross_object_saliency_loops
    base.straightforward_masks = True
    return base


def ground_truth(path: str, shape) -> "np.ndarray | None":
    """The MVTec-layout mask of a test image at ``shape`` (good: all False), or None if not found."""
    import cv2

    from saa.image_io import read_mask

    p = Path(path)
    if p.parent.name == "good":
        return np.zeros(shape, bool)
    m = p.parents[2] / "ground_truth" / p.parent.name / f"{p.stem}_mask.png"
    if not m.is_file():
        return None
    return cv2.resize(read_mask(m).astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def metrics_of(images, maps) -> "dict | None":
    """The project's metrics (%) of these maps against the images' masks; None without masks."""
    from saa.metrics import compute_all

    masks = [ground_truth(p, m.shape) for p, m in zip(images, maps)]
    if any(m is None for m in masks):
        return None
    labels = np.array([bool(m.any()) for m in masks])
    scores = np.array([float(m.max()) for m in maps])
    res = compute_all(labels, scores, np.stack(masks), np.stack(maps).astype(np.float32))
    return {k: 100.0 * float(v) for k, v in res.items()}


def best_of(fn, repeat: int):
    """(best wall time, result of the last call)."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def saliency_steps(extractor, image_path: str, repeat: int) -> dict:
    """The saliency steps alone on one image's real feature grids, ours vs the straightforward
    versions, with the max abs difference of their outputs.

    single: the selection step on the same 4096 x 4096 distance matrix (partial top-k + mean vs a
    full row sort + mean of the first n), and the whole single-object scoring (matrix product
    included, which both share). multi: multi-object scoring at the 1024 x 1024 input (a 256 x 256
    grid for stride-4 features) with three object masks, vectorised vs per-pixel loops.
    """
    import cv2

    from saa.saliency.reference import cross_object_saliency_loops, self_similarity_saliency_sorted
    from saa.image_io import read_rgb
    from saa.saliency import _flat, cross_object_saliency, self_similarity_saliency

    bgr = read_rgb(image_path)[:, :, ::-1].copy()
    out: dict = {}
    with torch.no_grad():
        feats = extractor(cv2.resize(bgr, (256, 256)), 256)
        f = _flat(feats)
        dist = 0.5 * (1 - f.T @ f)
        n = 400
        t_sort, a = best_of(lambda: dist.sort(dim=1, descending=True)[0][:, :n].mean(dim=1), repeat)
        t_topk, b = best_of(lambda: torch.topk(dist, n, dim=1, largest=True, sorted=False)[0].mean(dim=1), repeat)
        t_full_sort, c = best_of(lambda: self_similarity_saliency_sorted(feats, n, "farthest"), repeat)
        t_full_topk, d = best_of(lambda: self_similarity_saliency(feats, n, "farthest"), repeat)
        out["single"] = {
            "grid": list(feats.shape[-2:]), "channels": int(f.shape[0]), "n": n,
            "selection_sort_s": t_sort, "selection_topk_s": t_topk, "selection_speedup": t_sort / t_topk,
            "selection_max_abs_diff": float((a - b).abs().max()),
            "scoring_sort_s": t_full_sort, "scoring_topk_s": t_full_topk,
            "scoring_speedup": t_full_sort / t_full_topk, "scoring_max_abs_diff": float(np.abs(c - d).max()),
        }
        big = extractor(cv2.resize(bgr, (1024, 1024)), 1024)
        gh, gw = big.shape[-2:]
        yy, xx = np.mgrid[:gh, :gw]
        masks = np.stack([  # three objects: two disks and a bar, the bar overlapping one disk
            (yy - gh * 0.3) ** 2 + (xx - gw * 0.3) ** 2 < (gh * 0.18) ** 2,
            (yy - gh * 0.7) ** 2 + (xx - gw * 0.65) ** 2 < (gh * 0.2) ** 2,
            (np.abs(yy - gh * 0.45) < gh * 0.06) & (xx > gw * 0.1) & (xx < gw * 0.9),
        ])
        t_loop, e = best_of(lambda: cross_object_saliency_loops(big, masks), repeat)  # same rule for both
        t_vec, g = best_of(lambda: cross_object_saliency(big, masks), repeat)
        out["multi"] = {
            "grid": [gh, gw], "channels": int(big.shape[1] if big.dim() == 4 else big.shape[0]),
            "objects": len(masks), "object_positions": int(masks.any(0).sum()),
            "loops_s": t_loop, "vectorised_s": t_vec, "speedup": t_loop / t_vec,
            "max_abs_diff": float(np.abs(e - g).max()),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny", help="tiny | realsize | fidelity | a weights folder")
    ap.add_argument("--sam", default="vit_b", choices=["vit_b", "vit_l", "vit_h"], help="SAM size for realsize")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--image-glob", default=str(REPO.parent / "shared/realdata/mvtec_ad__*/bottle/test/*/*.png"))
    ap.add_argument("--image-files", nargs="+", default=None,
                    help="these images (paths, or globs under ../shared/realdata) instead of --image-glob")
    ap.add_argument("--config", default=str(REPO / "configs/mvtec.yaml"))
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
    ap.add_argument("--baseline", action="store_true",
                    help="also run the straightforward schedule and report the ratio and map difference")
    ap.add_argument("--exact", action="store_true",
                    help="also run our schedule with the package's own detector kernels "
                         "(models.grounding.kernels=reference): the schedule alone, bit-exact")
    ap.add_argument("--interleave", action="store_true",
                    help="run saa, --exact and --baseline image by image in turn instead of one after the "
                         "other (fairer ratios on a machine whose load changes)")
    ap.add_argument("--kernels", default="fast", choices=["fast", "reference"],
                    help="detector kernels of the main 'saa' schedule")
    ap.add_argument("--compare-precision", default="",
                    help="comma-separated precisions (tf32,bf16,fp16; CUDA autocast) to run the saa schedule "
                         "again with, reporting images/s, max map difference and metric difference vs --precision")
    ap.add_argument("--backend", default="",
                    help="comma-separated model backends to run and compare on the same weights: groundingdino "
                         "(groundingdino + segment_anything), transformers (transformers Grounding DINO + SAM "
                         "of --sam-variant); the first is the main run, the others report their map "
                         "difference to it, and the transformers detector also its batched-caption time")
    ap.add_argument("--sam-variant", default="sam", choices=["sam"],
                    help="SAM variant of the transformers backend (random-weight benchmarks: sam only, the "
                         "random files are SAM files)")
    ap.add_argument("--saliency-only", action="store_true",
                    help="only the saliency steps (single-object selection, multi-object scoring) "
                         "against their straightforward versions; loads only the CNN")
    ap.add_argument("--repeat", type=int, default=3, help="saliency timings: best of this many runs")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--cache", default=os.environ.get("SAA_BENCH_CACHE", str(Path(tempfile.gettempdir()) / "saa_bench")))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every schedule (repeatable), e.g. --set general_prompts=[]")
    ap.add_argument("--batch-sizes", default="",
                    help="comma-separated batch sizes > 1 to run the saa schedule again with (predict_batch, "
                         "images decoded in worker processes), each with its map difference to batch size 1")
    ap.add_argument("--precision-batch-sizes", default="",
                    help="batch sizes of the --compare-precision runs (default: 1 and the largest of --batch-sizes)")
    ap.add_argument("--reference-maps", default=None, metavar="NPZ",
                    help="maps of another program (keys '<defect type>/<file name>', e.g. the authors' code's); "
                         "every schedule reports its largest difference to them (missing file: noted)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="no untimed first prediction before the main schedule (a quick CPU dry run)")
    ap.add_argument("--no-saliency-steps", action="store_true",
                    help="with --baseline: skip the saliency-steps timing (saves time on a tight budget)")
    ap.add_argument("--build-only", action="store_true",
                    help="only build (or find in --cache) the random-weight model files of --models and write "
                         "their paths as JSON to --out")
    ap.add_argument("--out", default=None, help="write the JSON here (rewritten after every schedule)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b.strip()})
    except ValueError:
        ap.error(f"--batch-sizes {args.batch_sizes!r}: expected comma-separated whole numbers")
    if any(b < 1 for b in batch_sizes):
        ap.error("--batch-sizes: every batch size must be at least 1")
    batch_sizes = [b for b in batch_sizes if b > 1]
    try:
        precision_batches = sorted({int(b) for b in args.precision_batch_sizes.split(",") if b.strip()})
    except ValueError:
        ap.error(f"--precision-batch-sizes {args.precision_batch_sizes!r}: expected comma-separated whole numbers")
    if any(b < 1 for b in precision_batches):
        ap.error("--precision-batch-sizes: every batch size must be at least 1")
    precision_batches = precision_batches or [1] + batch_sizes[-1:]
    if args.build_only:
        t0 = time.perf_counter()
        files = files_of(model_overrides(args))
        return finish({"models": args.models, "sam": args.sam if args.models == "realsize" else None,
                       "build_s": time.perf_counter() - t0, "files": files}, args.out)

    import glob
    import warnings

    warnings.filterwarnings("ignore")
    from saa.config import load_config
    from saa.methods.saa_plus import SAAPipeline

    if args.image_files is None and args.models == "fidelity":
        args.image_files = list(FIDELITY_IMAGES)
    if args.image_files:
        images = []
        for name in args.image_files:
            hits = [name] if Path(name).is_file() else sorted(glob.glob(str(REPO.parent / "shared/realdata" / name)))
            if not hits:
                ap.error(f"--image-files {name}: no such file (nor under ../shared/realdata)")
            images.append(hits[0])
    else:
        images = sorted(glob.glob(args.image_glob))
        if not images:
            ap.error(f"no images match {args.image_glob}")
        step = max(1, len(images) // args.images)
        images = images[::step][: args.images]
    model_ov = model_overrides(args) + list(args.overrides)
    run_ov = [f"models.device={args.device}", f"models.precision={args.precision}",
              f"models.grounding.kernels={args.kernels}"]
    ov = model_ov + run_ov
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    for b in backends:
        if b not in BACKEND_SETS:
            ap.error(f"--backend {b!r}: choose from {', '.join(BACKEND_SETS)}")
    if backends:
        ov = ov + backend_overrides(backends[0], args.sam_variant)
    cfg = load_config(args.config, ov)

    t0 = time.perf_counter()
    fast = SAAPipeline(cfg)
    if not args.saliency_only:
        fast.load_models()
    load_s = time.perf_counter() - t0
    result = {"models": args.models, "sam": args.sam if args.models == "realsize" else None,
              "device": args.device, "precision": args.precision, "threads": torch.get_num_threads(),
              "category": args.category, "model_load_s": load_s, "image_files": images,
              "overrides": list(args.overrides)}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    if args.saliency_only:
        result["saliency"] = saliency_steps(fast.extractor, images[0], args.repeat)
        return finish(result, args.out)
    reference = load_reference_maps(args.reference_maps, images)
    if reference.get("note"):
        result["reference_maps_note"] = reference["note"]
    all_maps: dict[str, list] = {}  # schedule -> maps, for the differences to the baseline at the end

    def measured(label: str, res: dict, maps) -> None:
        """Record a schedule: its maps' difference to the reference maps, then save what exists."""
        all_maps[label] = maps
        ref = reference.get("maps")
        if ref is not None:
            if all(maps[i].shape == r.shape for i, r in ref.items()):
                res["max_abs_map_diff_vs_reference"] = float(max(np.abs(maps[i] - r).max() for i, r in ref.items()))
            else:
                res["reference_note"] = "the reference maps have another size (out_size differs)"
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))

    if not args.no_warmup:
        fast.predict(images[0], args.category)  # warm-up (allocator, lazy inits)
    pre = {}
    if args.interleave:  # saa, --exact and --baseline image by image, in turn (a shared machine's load
        # then weighs on each alike)
        runs = [("saa", fast)]
        if args.exact and args.kernels != "reference":
            runs.append(("saa_exact", exact_pipe(cfg, fast)))
        if args.baseline:
            runs.append(("baseline", baseline_pipe(cfg, fast)))
        pre = run_interleaved(runs, images, args.category)
    res_fast, maps_fast = pre.get("saa") or run_schedule(fast, images, args.category, "saa")
    result["saa"] = res_fast

    def max_diff(a_maps, b_maps) -> float:
        return float(max(np.abs(a - b).max() for a, b in zip(a_maps, b_maps)))

    base_metrics = metrics_of(images, maps_fast)
    result["saa"]["metrics"] = base_metrics
    measured("saa", res_fast, maps_fast)
    for b in batch_sizes:
        res_b, maps_b = run_batched(fast, images, args.category, f"saa_b{b}", b)
        res_b["metrics"] = metrics_of(images, maps_b)
        res_b["speedup_vs_main"] = res_b["images_per_s"] / res_fast["images_per_s"]
        res_b["max_abs_map_diff_vs_main"] = max_diff(maps_b, maps_fast)
        result[f"saa_b{b}"] = res_b
        measured(f"saa_b{b}", res_b, maps_b)
    for prec in [p.strip() for p in args.compare_precision.split(",") if p.strip()]:
        cfg_p = load_config(args.config, model_ov + [
            f"models.device={args.device}", f"models.precision={prec}", f"models.grounding.kernels={args.kernels}"])
        pipe = SAAPipeline(cfg_p, detector=fast.detector, refiner=fast.refiner, extractor=fast.extractor)
        for b in precision_batches:
            label = f"saa_{prec}" if b == 1 else f"saa_{prec}_b{b}"
            if b == 1:
                if pipe.device.type == "cuda":
                    pipe.predict(images[0], args.category)  # warm-up at this precision
                res_p, maps_p = run_schedule(pipe, images, args.category, label)
            else:
                res_p, maps_p = run_batched(pipe, images, args.category, label, b)
            m = metrics_of(images, maps_p)
            res_p["metrics"] = m
            res_p["speedup_vs_main"] = res_p["images_per_s"] / res_fast["images_per_s"]
            res_p["max_abs_map_diff_vs_main"] = max_diff(maps_p, maps_fast)
            res_p["metric_diff_vs_main"] = None if m is None or base_metrics is None else \
                {k: m[k] - base_metrics[k] for k in m}
            result[label] = res_p
            measured(label, res_p, maps_p)

    if backends:
        result["backend"] = backends[0]
        result["saa"]["detector_batched"] = batched_captions(fast, images[0], args.category)
        for b in backends[1:]:
            t0 = time.perf_counter()
            pipe = SAAPipeline(load_config(args.config, model_ov + run_ov + backend_overrides(b, args.sam_variant)),
                               extractor=fast.extractor)
            pipe.load_models()
            load_b = time.perf_counter() - t0
            pipe.predict(images[0], args.category)  # warm-up
            res_b, maps_b = run_schedule(pipe, images, args.category, f"saa_{b}")
            res_b["model_load_s"] = load_b
            res_b["metrics"] = metrics_of(images, maps_b)
            res_b["max_abs_map_diff_vs_main"] = max_diff(maps_b, maps_fast)
            res_b["mean_abs_map_diff_vs_main"] = float(np.mean([np.abs(x - y).mean() for x, y in zip(maps_b, maps_fast)]))
            res_b["speed_vs_main"] = res_b["images_per_s"] / res_fast["images_per_s"]
            res_b["detector_batched"] = batched_captions(pipe, images[0], args.category)
            result[f"saa_{b}"] = res_b

    maps_exact = None
    if args.exact and args.kernels != "reference":
        if "saa_exact" not in pre:
            exact = exact_pipe(cfg, fast)
            if exact.device.type == "cuda":
                exact.predict(images[0], args.category)  # warm-up of its own detector
        res_exact, maps_exact = pre.get("saa_exact") or run_schedule(exact, images, args.category, "saa_exact")
        result["saa_exact"] = res_exact
        result["saa_exact"]["metrics"] = metrics_of(images, maps_exact)
        result["max_abs_map_diff_saa_vs_exact"] = max_diff(maps_fast, maps_exact)
        measured("saa_exact", res_exact, maps_exact)

    if args.baseline:
        if "baseline" not in pre:
            base = baseline_pipe(cfg, fast)
            if base.device.type == "cuda":
                base.predict(images[0], args.category)  # warm-up of its own detector
        res_base, maps_base = pre.get("baseline") or run_schedule(base, images, args.category, "baseline")
        result["baseline"] = res_base
        result["speedup"] = res_fast["images_per_s"] / res_base["images_per_s"]
        result["baseline"]["metrics"] = metrics_of(images, maps_base)
        result["max_abs_map_diff"] = max_diff(maps_fast, maps_base)
        if maps_exact is not None:
            result["speedup_exact"] = result["saa_exact"]["images_per_s"] / res_base["images_per_s"]
            result["max_abs_map_diff_exact"] = max_diff(maps_exact, maps_base)
        for label, maps in all_maps.items():  # every schedule against the straightforward one
            result[label]["max_abs_map_diff_vs_baseline"] = max_diff(maps, maps_base)
        measured("baseline", res_base, maps_base)

    if (args.baseline and not args.no_saliency_steps) or args.saliency_only:
        result["saliency"] = saliency_steps(fast.extractor, images[0], args.repeat)

    return finish(result, args.out)


def load_reference_maps(path, images) -> dict:
    """{"maps": {image position: map}} of those of ``images`` an ``.npz`` keyed by :func:`image_key`
    has, and {"note": ...} when it lacks some or all of them (or the file)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        return {"note": f"{p}: no such file (the reference program did not run or did not finish)"}
    with np.load(p) as z:
        got = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    maps, missing = {}, []
    for i, img in enumerate(images):
        m = got.get(image_key(img))
        if m is None:
            missing.append(image_key(img))
        else:
            maps[i] = m
    if not maps:
        return {"note": f"{p}: no map of any of the images"}
    out = {"maps": maps}
    if missing:
        out["note"] = f"{p}: no map of {', '.join(missing)} (differences over the other images)"
    return out


def stage_table(result: dict) -> str:
    """Seconds per image of every stage (``Prediction.timings``) of each schedule run, side by side."""
    runs = [(k, v) for k, v in result.items() if isinstance(v, dict) and "stage_seconds" in v]
    if not runs:
        return ""
    names = []
    for _, r in runs:
        names += [n for n in r["stage_seconds"] if n not in names]
    width = max(len(n) for n in names + ["images/s"])
    lines = [f"{'s per image':<{width}}  " + "  ".join(f"{k:>12}" for k, _ in runs)]
    for n in names:
        lines.append(f"{n:<{width}}  " + "  ".join(
            f"{r['stage_seconds'].get(n, 0.0) / r['images']:>12.3f}" for _, r in runs))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{r['seconds'] / r['images']:>12.3f}" for _, r in runs))
    lines.append(f"{'images/s':<{width}}  " + "  ".join(f"{r['images_per_s']:>12.4f}" for _, r in runs))
    return "\n".join(lines)


def finish(result: dict, out) -> int:
    print(json.dumps({k: v for k, v in result.items() if k != "image_files"}, indent=1))
    table = stage_table(result)
    if table:
        print(table, file=sys.stderr)
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

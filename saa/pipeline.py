"""The SAA+ pipeline (SPEC §3): object stage -> defect candidates -> SAM -> saliency -> re-scoring
-> top-K fusion.

``SAAPipeline.from_config(cfg).predict(image, category)`` returns a :class:`Prediction` holding the
anomaly map (at ``out_size`` and at the image size), the saliency map, the object boxes/masks and
every candidate region with the reason it was dropped, if it was.

Cross-image saliency (``behaviour.cross_image_saliency``, on in the ``improved`` preset; our
addition, not the authors'): the saliency map is combined with each position's distance to the
OTHER images of the category before re-scoring. It takes two passes over the images::

    bank = pipe.cross_image_bank(images)                  # pass 1: saliency-CNN features of each
    preds = [pipe.predict(im, "bottle", others=bank, index=i) for i, im in enumerate(images)]

(:meth:`SAAPipeline.predict_many` does both.) Without a bank, or with a bank of one image, the
single-image saliency is used alone, with a warning and a note in the prediction.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np
import torch

from . import regularization as R
from .config import CategoryConfig, ResolvedBehaviour, SaaConfig, load_config
from .cross_bank import CrossImageBank, FeatureStore, combine_saliency
from .image_io import as_rgb_uint8, read_rgb
from .saliency import SaliencyResult, cross_object_saliency, self_similarity_saliency, visual_saliency

log = logging.getLogger(__name__)

# why a candidate region was dropped
DROP_AREA = "area"  # box (or mask) area outside the allowed window
DROP_PHRASE = "phrase"  # decoded phrase names the object (filter phrase)
DROP_TOP_K = "top_k"  # not among the K highest re-scored regions


@dataclass
class Candidate:
    """One detector box that passed the score threshold, and what became of it."""

    stage: str  # "object" or "defect"
    prompt_index: int  # which caption of the stage (0-based)
    caption: str  # caption as sent to the detector
    filter: Optional[str]  # filter phrase of that caption (None for the object stage)
    query: int  # detector query index
    box_cxcywh: list[float]  # normalised
    box_xyxy: list[float]  # pixels of the original image
    score: float  # detector score (max token probability)
    phrase: str  # decoded phrase
    area: float  # normalised box area w*h
    mask_area: Optional[float] = None  # mask area / image area (when a mask was made)
    rescored: Optional[float] = None  # p * exp(gamma * mean saliency)
    kept: bool = False
    dropped: Optional[str] = None  # DROP_* reason, None when kept

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Prediction:
    """Everything the pipeline computed for one image."""

    category: str
    anomaly_map: np.ndarray  # (out_size, out_size) float32
    anomaly_map_full: np.ndarray  # (H, W) float32
    saliency: np.ndarray  # (H, W) float32
    object_boxes: np.ndarray  # (N, 4) pixel xyxy of kept object boxes
    object_masks: np.ndarray  # (N, H, W) bool
    candidates: list[Candidate]  # object and defect candidates, in detector order
    kept_masks: np.ndarray  # (K, H, W) bool masks of the kept defect regions
    object_area: float
    defect_max_area: float
    saliency_branch: str  # "single" / "multi", + "+cross(<rule>)" when combined with cross-image saliency
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trace: dict[str, Any] = field(default_factory=dict)  # intermediates when predict(trace=True)

    @property
    def score(self) -> float:
        """Image score before any per-category normalisation: max of the map."""
        return float(self.anomaly_map.max()) if self.anomaly_map.size else 0.0

    @property
    def defects(self) -> list[Candidate]:
        return [c for c in self.candidates if c.stage == "defect"]

    @property
    def kept(self) -> list[Candidate]:
        return [c for c in self.defects if c.kept]

    def regions_dict(self) -> dict[str, Any]:
        """JSON-ready description of the regions (what ``saa predict`` writes)."""
        return {
            "category": self.category,
            "image_size": list(self.anomaly_map_full.shape),
            "out_size": int(self.anomaly_map.shape[0]),
            "score": self.score,
            "object_area": self.object_area,
            "defect_max_area": self.defect_max_area,
            "saliency_branch": self.saliency_branch,
            "object_boxes": self.object_boxes.tolist(),
            "candidates": [c.to_dict() for c in self.candidates],
            "timings_s": self.timings,
            "notes": self.notes,
        }


def _f(x) -> float:
    return float(x.item() if isinstance(x, torch.Tensor) else x)


class SAAPipeline:
    """Grounding DINO + SAM + saliency, regularised by the category's hybrid prompts."""

    def __init__(self, config: SaaConfig, detector=None, refiner=None, extractor=None):
        from .models.checkpoints import resolve_device

        self.config = config
        self.behaviour: ResolvedBehaviour = config.resolved_behaviour()
        self.device = resolve_device(config.models.device)
        self._detector, self._refiner, self._extractor = detector, refiner, extractor
        # scoring functions of the saliency prompt (saa.baseline has the straightforward ones)
        self.single_saliency = self_similarity_saliency
        self.multi_saliency = cross_object_saliency

    @classmethod
    def from_config(cls, config: Union[SaaConfig, str, Path], overrides=()) -> "SAAPipeline":
        if not isinstance(config, SaaConfig):
            config = load_config(config, overrides)
        return cls(config)

    # ------------------------------------------------------------ models (lazy)
    @property
    def detector(self):
        if self._detector is None:
            from .models.factory import build_detector

            self._detector = build_detector(self.config, self.device)
        return self._detector

    @property
    def refiner(self):
        if self._refiner is None:
            from .models.factory import build_refiner

            self._refiner = build_refiner(self.config, self.device)
        return self._refiner

    @property
    def extractor(self):
        if self._extractor is None:
            from .models.features import FeatureExtractor

            s = self.config.models.saliency
            ckpt = s.checkpoint if str(s.checkpoint).startswith("package:") else self.config.resolve_path(s.checkpoint)
            self._extractor = FeatureExtractor(s.backbone, ckpt, s.stages, self.device)
        return self._extractor

    def load_models(self) -> "SAAPipeline":
        """Load all three models now (otherwise they load on first use)."""
        _ = self.detector, self.refiner, self.extractor
        return self

    # ------------------------------------------------------------ stages
    def _propose(self, stage: str, prompts: list[tuple[str, Optional[str]]], min_area, max_area,
                 width: int, height: int, candidates: list[Candidate], trace: Optional[dict]):
        """Detector calls for one stage; returns (boxes cxcywh of survivors, their scores, their
        candidate records, largest surviving box area)."""
        g = self.config.models.grounding
        use_box_area = self.behaviour.area_rule == "boxes"
        kept_boxes, kept_scores, kept_cands = [], [], []
        largest = None
        for pi, (caption, filt) in enumerate(prompts):
            out = self.detector.detect(caption)
            scores = R.box_scores(out.token_probs)
            areas = R.box_areas(out.boxes)
            ok_score = R.score_mask(scores, g.box_threshold)
            ok_area = R.area_mask(areas, min_area, max_area) if use_box_area else torch.ones_like(ok_score)
            if trace is not None:
                trace.setdefault("dino_calls", []).append(
                    {"stage": stage, "caption": out.caption, "input_ids": out.input_ids,
                     "boxes": out.boxes.numpy(), "token_probs": out.token_probs[:, :len(out.input_ids)].numpy()})
            idx = torch.nonzero(ok_score, as_tuple=True)[0].tolist()
            survivors = []
            xyxy = R.to_pixel_xyxy(out.boxes[idx], width, height) if idx else torch.zeros(0, 4)
            for j, q in enumerate(idx):
                phrase = self.detector.phrase(out.token_probs[q], out.input_ids, g.text_threshold)
                c = Candidate(stage=stage, prompt_index=pi, caption=out.caption, filter=filt, query=q,
                              box_cxcywh=out.boxes[q].tolist(), box_xyxy=xyxy[j].tolist(),
                              score=_f(scores[q]), phrase=phrase, area=_f(areas[q]))
                candidates.append(c)
                if not bool(ok_area[q]):
                    c.dropped = DROP_AREA
                elif R.phrase_filtered(phrase, filt):
                    c.dropped = DROP_PHRASE
                else:
                    survivors.append(q)
                    kept_cands.append(c)
            if survivors:
                kept_boxes.append(out.boxes[survivors])
                kept_scores.extend(_f(scores[q]) for q in survivors)
                a = areas[survivors].max()
                if largest is None or a > largest:
                    largest = a
        boxes = torch.cat(kept_boxes) if kept_boxes else torch.zeros(0, 4)
        return boxes, np.asarray(kept_scores, dtype=np.float64), kept_cands, largest

    def _segment(self, boxes: torch.Tensor, width: int, height: int) -> np.ndarray:
        xyxy = R.to_pixel_xyxy(boxes, width, height)
        return self.refiner.masks(xyxy)

    def _precision(self):
        """Autocast context for the configured precision (CUDA only; fp32 = exact)."""
        import contextlib

        p = self.config.models.precision
        if self.device.type != "cuda" or p in ("fp32", "tf32"):
            if self.device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = p == "tf32"
                torch.backends.cudnn.allow_tf32 = p == "tf32"
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if p == "bf16" else torch.float16)

    # ------------------------------------------------------------ cross-image saliency (pass 1)
    @property
    def cross_image(self) -> bool:
        """Whether the behaviour combines the saliency with cross-image saliency."""
        return bool(self.behaviour.cross_image_saliency)

    def cross_image_settings(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~saa.cross_bank.CrossImageBank` from the behaviour."""
        b = self.behaviour
        return dict(k=b.cross_image_k, max_others=b.cross_image_max_others or None,
                    subset=b.cross_image_subset, device=self.device)

    def saliency_features(self, image) -> torch.Tensor:
        """Pass 1 of cross-image saliency: the unit feature grid (C, h, w), float32 on the CPU, of
        the whole image resized to ``single_object_size``, in the preset's saliency colour order
        (what the single-object saliency computes on)."""
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else as_rgb_uint8(image)
        b = self.behaviour
        img = np.ascontiguousarray(rgb[:, :, ::-1]) if b.saliency_color_order == "bgr" else rgb
        size = b.single_object_size
        with torch.no_grad(), self._precision():
            feats = self.extractor(cv2.resize(img, (size, size)), size)
        return feats[0].float().cpu()

    def cross_image_bank(self, images, *, folder: Union[str, Path, None] = None,
                         keys: Optional[list[str]] = None) -> CrossImageBank:
        """Pass 1 over ``images`` (RGB arrays or file paths, read one at a time): a bank whose
        features stay in memory, or, with ``folder``, in files there (memory then stays bounded
        whatever the number of images; see :mod:`saa.cross_bank`)."""
        images = list(images)
        keys = list(keys) if keys is not None else [str(i) for i in range(len(images))]
        if len(keys) != len(images):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        settings = self.cross_image_settings()
        if folder is None:
            return CrossImageBank.from_features([self.saliency_features(im) for im in images], keys=keys,
                                                **settings)
        store = FeatureStore(folder)
        for key, im in zip(keys, images):
            store.put(key, self.saliency_features(im))
        return CrossImageBank.from_store(store, keys, **settings)

    def predict_many(self, images, category, *, folder: Union[str, Path, None] = None, **kwargs):
        """Predictions of several images of one category (a generator). With cross-image saliency
        on, a bank of all of them is built first (pass 1) and each is scored against the others."""
        images = list(images)
        bank = self.cross_image_bank(images, folder=folder) if self.cross_image and len(images) > 1 else None
        for i, im in enumerate(images):
            yield self.predict(im, category, others=bank, index=i if bank is not None else None, **kwargs)

    # ------------------------------------------------------------ predict
    def predict(self, image, category, *, category_name=None, trace: bool = False,
                others: Optional[CrossImageBank] = None, index: Optional[int] = None) -> "Prediction":
        """Run SPEC §3 on one image (an RGB uint8 array or a file path).

        ``others`` / ``index`` (only with ``behaviour.cross_image_saliency``): the bank of the
        category's images from :meth:`cross_image_bank`; ``index`` is this image's place in it, or
        None for an image that is not in the bank (it is then scored against the bank's images).
        """
        if others is not None and not self.cross_image:
            raise ValueError("predict(others=...) needs behaviour.cross_image_saliency (e.g. preset 'improved')")
        if index is not None and others is None:
            raise ValueError("predict(index=...) needs the bank it indexes: others=...")
        with torch.no_grad(), self._precision():
            return self._predict(image, category, category_name=category_name, trace=trace, others=others,
                                 index=index)

    def _cross_saliency(self, sal: SaliencyResult, rgb: np.ndarray, others: Optional[CrossImageBank],
                        index: Optional[int], feats: Optional[torch.Tensor], notes: list[str],
                        tr: Optional[dict]) -> SaliencyResult:
        """Combine the single-image saliency with the cross-image score map (at the image size).
        ``feats``: this image's pass-1 features (:meth:`saliency_features`; given with ``others``)."""
        grid = None
        if others is not None:
            grid = others.scores(index, query=feats) if index is not None else others.scores_for(feats)
        if grid is None:
            got = "none were given" if others is None else f"the bank holds {len(others)} image(s)"
            note = (f"cross-image saliency needs other images of the category ({got}); "
                    "used the single-image saliency alone")
            log.warning(note)
            notes.append(note)
            return sal
        height, width = rgb.shape[:2]
        cross = cv2.resize(np.asarray(grid, dtype=np.float32), (width, height))
        rule = self.behaviour.cross_image_combine
        if tr is not None:
            tr.update(saliency_single=sal.map, saliency_cross=cross)
        return SaliencyResult(combine_saliency(sal.map, cross, rule), f"{sal.branch}+cross({rule})", sal.note)

    def _predict(self, image: Union[np.ndarray, str, Path], category: Union[str, CategoryConfig],
                 *, category_name: Optional[str] = None, trace: bool = False,
                 others: Optional[CrossImageBank] = None, index: Optional[int] = None) -> Prediction:
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else as_rgb_uint8(image)
        if isinstance(category, CategoryConfig):
            cat, name = category, category_name or "custom"
            prompts = [(c.replace("{c}", name), f.replace("{c}", name))
                       for c, f in [tuple(p) for p in self.config.general_prompts]] + [tuple(p) for p in cat.prompts]
        else:
            cat, name = self.config.category(category), category
            prompts = self.config.language_prompts(category)
        b = self.behaviour
        height, width = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        timings: dict[str, float] = {}
        notes: list[str] = []
        tr: Optional[dict] = {} if trace else None
        candidates: list[Candidate] = []

        t0 = time.perf_counter()
        self.detector.set_image(rgb)
        timings["detector_backbone"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.refiner.set_image(bgr if b.sam_color_order == "bgr" else rgb)
        timings["sam_encoder"] = time.perf_counter() - t0

        try:
            # --- object stage (SPEC §3.3)
            t0 = time.perf_counter()
            obj_boxes, _, obj_cands, largest = self._propose(
                "object", [(cat.object, None)], 0.0, cat.object_max_area, width, height, candidates, tr)
            timings["detector_object"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            obj_masks = self._segment(obj_boxes, width, height) if len(obj_boxes) else np.zeros((0, height, width), bool)
            if b.area_rule == "masks" and len(obj_masks):
                fr = R.mask_area_fractions(obj_masks)
                keep = R.mask_area_keep(fr, 0.0, cat.object_max_area)
                for c, f, k in zip(obj_cands, fr, keep):
                    c.mask_area = float(f)
                    if not k:
                        c.dropped = DROP_AREA
                obj_masks, obj_boxes = obj_masks[keep], obj_boxes[torch.from_numpy(keep)]
                obj_cands = [c for c, k in zip(obj_cands, keep) if k]
                largest = torch.tensor(float(fr[keep].max()), dtype=torch.float32) if keep.any() else None
            elif len(obj_masks):
                for c, m in zip(obj_cands, R.mask_area_fractions(obj_masks)):
                    c.mask_area = float(m)
            for c in obj_cands:
                c.kept = True
            timings["sam_object"] = time.perf_counter() - t0
            object_area = R.largest_area(torch.zeros(0)) if largest is None else largest
            if largest is None:
                notes.append("no object box survived: object_area = 1.0")
            max_area = R.defect_max_area(object_area, cat.area_ratio)

            # --- defect candidates (SPEC §3.4)
            t0 = time.perf_counter()
            def_boxes, def_scores, def_cands, _ = self._propose(
                "defect", prompts, 0.0, max_area, width, height, candidates, tr)
            timings["detector_defect"] = time.perf_counter() - t0

            # --- saliency (SPEC §3.6): needs only the object masks
            t0 = time.perf_counter()
            sal_img = bgr if b.saliency_color_order == "bgr" else rgb
            # cross-image saliency: this image's pass-1 features are the single-object saliency's
            # input too (same image, size and colour order), so the CNN does not run twice
            cross_feats = None
            if b.cross_image_saliency and others is not None:
                cross_feats = others.features(index) if index is not None else self.saliency_features(rgb)
            sal = visual_saliency(sal_img, obj_masks, cat.n_objects, self.extractor, neighbors=b.saliency_neighbors,
                                  n=b.saliency_n, single_size=b.single_object_size, multi_size=b.multi_object_size,
                                  single_fn=self.single_saliency, multi_fn=self.multi_saliency,
                                  single_features=None if cross_feats is None else cross_feats.to(self.device))
            if sal.note:
                notes.append(sal.note)
            timings["saliency"] = time.perf_counter() - t0
            if b.cross_image_saliency:
                t0 = time.perf_counter()
                sal = self._cross_saliency(sal, rgb, others, index, cross_feats, notes, tr)
                timings["cross_image"] = time.perf_counter() - t0

            # --- SAM masks of the defect boxes, area rule, re-scoring (SPEC §3.5, 3.7). The decoder
            # runs once for all boxes; full-size masks are made a chunk at a time and only their
            # area and mean saliency kept, then remade for the K kept regions (memory stays bounded
            # for large images and many boxes; the values are the same).
            t0 = time.perf_counter()
            n_def = len(def_cands)
            areas = np.zeros(n_def)
            rescored = np.zeros(n_def)
            all_masks = [] if tr is not None else None
            if n_def:
                low = self.refiner.low_res_logits(R.to_pixel_xyxy(def_boxes, width, height))
                step = self.refiner.chunk_size()
                for i in range(0, n_def, step):
                    m = self.refiner.upscale(low[i:i + step])
                    areas[i:i + step] = R.mask_area_fractions(m)
                    rescored[i:i + step] = R.rescore(def_scores[i:i + step], m, sal.map, b.rescore_gamma)
                    if all_masks is not None:
                        all_masks.append(m)
            for c, f in zip(def_cands, areas):
                c.mask_area = float(f)
            keep = R.mask_area_keep(areas, 0.0, max_area) if b.area_rule == "masks" else np.ones(n_def, bool)
            for c, k in zip(def_cands, keep):
                if not k:
                    c.dropped = DROP_AREA
            idx = np.flatnonzero(keep)  # candidates that take part in the top-K
            def_cands, def_scores, rescored = [def_cands[i] for i in idx], def_scores[idx], rescored[idx]
            def_masks = np.concatenate(all_masks)[idx] if all_masks else np.zeros((0, height, width), bool)
            timings["sam_defect"] = time.perf_counter() - t0

            # --- top-K and fusion (SPEC §3.7)
            t0 = time.perf_counter()
            kept_idx = np.zeros(0, dtype=int)
            kept_masks = np.zeros((0, height, width), bool)
            if len(def_cands):
                kept_idx = R.top_k(rescored, cat.k_mask)
                for c, s in zip(def_cands, rescored):
                    c.rescored = float(s)
                    c.dropped = DROP_TOP_K
                for i in kept_idx:
                    def_cands[i].kept, def_cands[i].dropped = True, None
                kept_masks = self.refiner.upscale(low[idx[kept_idx]])
                full = R.fuse(kept_masks, rescored[kept_idx], np.arange(len(kept_idx)), b.fusion_delta,
                              (height, width))
            else:
                full = np.zeros((height, width), dtype=np.float64)
                notes.append("no defect candidate survived: the anomaly map is all zeros")
            out_map = R.resize_map(full, self.config.out_size)
            timings["fusion"] = time.perf_counter() - t0
        finally:
            self.detector.reset_image()
            self.refiner.reset_image()

        if tr is not None:
            tr.update(object_masks=obj_masks, defect_masks=def_masks, defect_scores=def_scores,
                      rescored=rescored, topk=kept_idx, saliency=sal.map, anomaly_map_f64=out_map)
        return Prediction(
            category=name,
            anomaly_map=np.nan_to_num(out_map.astype(np.float32)),
            anomaly_map_full=np.nan_to_num(full.astype(np.float32)),
            saliency=np.nan_to_num(np.asarray(sal.map, dtype=np.float32)),
            object_boxes=R.to_pixel_xyxy(obj_boxes, width, height).numpy() if len(obj_boxes) else np.zeros((0, 4), np.float32),
            object_masks=obj_masks,
            candidates=candidates,
            kept_masks=kept_masks,
            object_area=_f(object_area),
            defect_max_area=_f(max_area),
            saliency_branch=sal.branch,
            timings=timings,
            notes=notes,
            trace=tr or {},
        )

"""The SAA+ pipeline (SPEC §3): object stage -> defect candidates -> SAM -> saliency -> re-scoring
-> top-K fusion, in named stages over one per-image state.

``SAAPipeline(cfg).predict(image, category)`` returns a :class:`Prediction` holding the anomaly map
(at ``out_size`` and at the image size), the saliency map, the object boxes/masks and every
candidate region with the reason it was dropped, if it was.

Cross-image saliency (``behaviour.cross_image_saliency``, on in the ``improved`` preset; our
addition, not the authors'): the saliency map is combined with each position's distance to
reference images before re-scoring. The references come as a bank
(:class:`~saa.saliency.bank.CrossImageBank`) of :meth:`SAAPipeline.saliency_features`, built by
whoever calls (the run engine from a category's images, ``saa predict`` from the images given)::

    bank = CrossImageBank.from_features([pipe.saliency_features(im) for im in images],
                                        **pipe.cross_image_settings())
    pred = pipe.predict(images[i], "bottle", others=bank, index=i)

Without a bank, or with a bank of one image, the single-image saliency is used alone, with a
warning and a note in the prediction.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np
import torch

from ...config import CategoryConfig, ResolvedBehaviour, SaaConfig, load_config
from ...image_io import as_rgb_uint8, read_rgb
from ...prediction import DROP_AREA, DROP_PHRASE, DROP_TOP_K, Candidate, Prediction  # noqa: F401
from ...saliency.bank import CrossImageBank, scores_against
from ...saliency.cross import combine as combine_saliency
from ...saliency.single import cross_object_saliency, self_similarity_saliency
from . import regularization as R
from .saliency_prompt import SaliencyResult, visual_saliency

log = logging.getLogger(__name__)

def _f(x) -> float:
    return float(x.item() if isinstance(x, torch.Tensor) else x)


def _rescore_means(scores: np.ndarray, means: np.ndarray, dtype, gamma: float) -> np.ndarray:
    """:func:`.regularization.rescore` from the masks' mean saliency (NaN: empty mask, factor 1):
    the exponential in the saliency's dtype, the product in float64."""
    g = np.asarray(gamma, dtype=dtype)
    factor = np.where(np.isnan(means), 1.0, np.exp(g * np.nan_to_num(means).astype(dtype)))
    return np.asarray(scores, dtype=np.float64) * factor.astype(np.float64)


class SAAPipeline:
    """Grounding DINO + SAM + saliency, regularised by the category's hybrid prompts."""

    def __init__(self, config: SaaConfig, detector=None, refiner=None, extractor=None):
        from ...models.checkpoints import resolve_device

        self.config = config
        self.behaviour: ResolvedBehaviour = config.resolved_behaviour()
        self.device = resolve_device(config.models.device)
        self._detector, self._refiner, self._extractor = detector, refiner, extractor
        # scoring functions of the saliency prompt (saa.saliency.reference has the straightforward ones)
        self.single_saliency = self_similarity_saliency
        self.multi_saliency = cross_object_saliency
        # True: every box's full-size mask is made and kept, and the object masks always (the
        # authors' schedule, scripts/benchmark.py --baseline); False: only the masks that are used
        # are kept, the others' area and mean saliency are taken a chunk at a time
        self.straightforward_masks = False

    @classmethod
    def from_config(cls, config: Union[SaaConfig, str, Path], overrides=()) -> "SAAPipeline":
        if not isinstance(config, SaaConfig):
            config = load_config(config, overrides)
        return cls(config)

    # ------------------------------------------------------------ models (lazy)
    @property
    def detector(self):
        if self._detector is None:
            from ...models.factory import build_detector

            self._detector = build_detector(self.config, self.device)
        return self._detector

    @property
    def refiner(self):
        if self._refiner is None:
            from ...models.factory import build_refiner

            self._refiner = build_refiner(self.config, self.device)
        return self._refiner

    @property
    def extractor(self):
        if self._extractor is None:
            from ...models.features import FeatureExtractor

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
        # a detector that can (the transformers backend) takes the stage's captions as one batch
        many = getattr(self.detector, "detect_many", None)
        outs = many([c for c, _ in prompts]) if many is not None else (self.detector.detect(c) for c, _ in prompts)
        for pi, ((caption, filt), out) in enumerate(zip(prompts, outs)):
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

    def _precision(self):
        """Autocast context for the configured precision: bf16 / fp16 autocast on the device (CUDA,
        and the CPU too: the same code paths, so dtype mistakes show without a GPU); fp32 exact;
        tf32 = fp32 with TF32 matrix products on CUDA (plain fp32 elsewhere)."""
        import contextlib

        p = self.config.models.precision
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = p == "tf32"
            torch.backends.cudnn.allow_tf32 = p == "tf32"
        if p in ("bf16", "fp16"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------ cross-image saliency (pass 1)
    @property
    def cross_image(self) -> bool:
        """Whether the behaviour combines the saliency with cross-image saliency."""
        return bool(self.behaviour.cross_image_saliency)

    def cross_image_settings(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~saa.saliency.bank.CrossImageBank` from the behaviour."""
        b = self.behaviour
        return dict(k=b.cross_image_k, max_others=b.cross_image_max_others or None,
                    subset=b.cross_image_subset, aggregate=b.cross_image_aggregate,
                    fraction=b.cross_image_fraction, device=self.device)

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

    def saliency_features_batch(self, images) -> list[torch.Tensor]:
        """:meth:`saliency_features` of several images, the CNN run once on all of them (each image
        resized as on its own: the features equal those of one image at a time)."""
        b = self.behaviour
        size = b.single_object_size
        small = []
        for image in images:
            rgb = read_rgb(image) if isinstance(image, (str, Path)) else as_rgb_uint8(image)
            img = np.ascontiguousarray(rgb[:, :, ::-1]) if b.saliency_color_order == "bgr" else rgb
            small.append(cv2.resize(img, (size, size)))
        with torch.no_grad(), self._precision():
            feats = self.extractor.batch(small, size)
        return [f[0].float().cpu() for f in feats]

    # ------------------------------------------------------------ predict
    def predict(self, image, category, *, category_name=None, trace: bool = False,
                others: Optional[CrossImageBank] = None, index: Optional[int] = None) -> "Prediction":
        """Run SPEC §3 on one image (an RGB uint8 array or a file path).

        ``others`` / ``index`` (only with ``behaviour.cross_image_saliency``): a bank of reference
        features (:meth:`saliency_features` of each reference, settings :meth:`cross_image_settings`);
        ``index`` is this image's place in it, or None for an image that is not in the bank (it is
        then scored against the bank's images).
        """
        if others is not None and not self.cross_image:
            raise ValueError("predict(others=...) needs behaviour.cross_image_saliency (e.g. preset 'improved')")
        if index is not None and others is None:
            raise ValueError("predict(index=...) needs the bank it indexes: others=...")
        with torch.no_grad(), self._precision():
            return self._predict(image, category, category_name=category_name, trace=trace, others=others,
                                 index=index)

    def predict_batch(self, images, category, *, category_name=None, others: Optional[CrossImageBank] = None,
                      indices: Optional[list] = None) -> list["Prediction"]:
        """:meth:`predict` of several images (``indices``: each one's place in ``others``, as
        ``index``), with the image-level models run once for all of them: the detector backbone
        (images of one input size as one batch), the SAM image encoder and the saliency CNN (all
        images as one batch, each resized and padded as on its own). Every per-image stage after
        them runs as in :meth:`predict`, so the predictions equal those of one image at a time.
        Models without ``set_images`` (test doubles) get one image at a time. Each image's
        ``timings`` carry an equal share of the batched model calls."""
        images = list(images)
        indices = [None] * len(images) if indices is None else list(indices)
        if len(indices) != len(images):
            raise ValueError(f"predict_batch: {len(images)} images but {len(indices)} indices")
        if others is not None and not self.cross_image:
            raise ValueError("predict_batch(others=...) needs behaviour.cross_image_saliency (e.g. preset 'improved')")
        if others is None and any(i is not None for i in indices):
            raise ValueError("predict_batch(indices=...) needs the bank they index: others=...")
        batched = all(hasattr(m, "set_images") and hasattr(m, "use_image") for m in (self.detector, self.refiner))
        if len(images) <= 1 or not batched:
            return [self.predict(im, category, category_name=category_name, others=others, index=i)
                    for im, i in zip(images, indices)]
        with torch.no_grad(), self._precision():
            return self._predict_batch(images, category, category_name, others, indices)

    def _predict_batch(self, images, category, category_name, others, indices) -> list[Prediction]:
        """The stages of :meth:`_predict` for a batch: the image-level models once, then image by
        image the detector and SAM stages (the models' :meth:`use_image` selects the image), the
        saliency CNN on the batch, then image by image the saliency, masks and fusion."""
        b = self.behaviour
        states = [self._start(im, category, category_name, False) for im in images]
        t0 = time.perf_counter()
        self.detector.set_images([st.rgb for st in states])
        _share(states, "detector_backbone", time.perf_counter() - t0)
        t0 = time.perf_counter()
        self.refiner.set_images([st.bgr if b.sam_color_order == "bgr" else st.rgb for st in states])
        _share(states, "sam_encoder", time.perf_counter() - t0)
        try:
            for j, st in enumerate(states):
                self.detector.use_image(j)
                self.refiner.use_image(j)
                self._object_stage(st)
                self._defect_candidates(st)
            pre = self._batch_saliency_features(states, others, indices)
            for j, st in enumerate(states):
                self._saliency_stage(st, others, indices[j], pre[j])
                if pre[j]:
                    st.timings["saliency"] += st.timings.pop("saliency_cnn")
            del pre
            for j, st in enumerate(states):
                self.detector.use_image(j)
                self.refiner.use_image(j)
                self._masks_and_rescoring(st)
                self._fusion(st)
        finally:
            self.detector.reset_image()
            self.refiner.reset_image()
        return [self._prediction(st) for st in states]

    def _batch_saliency_features(self, states, others, indices) -> list[dict]:
        """Per image, the saliency CNN features its saliency stage will ask for ({input size:
        features}), computed for the whole batch at once: the multi-object input where the
        category has several objects and at least two object masks are present, else the
        single-object input (unless the bank already holds the image's features)."""
        b = self.behaviour
        want: dict[int, list[int]] = {}
        for j, st in enumerate(states):
            masks = st.obj_masks if st.obj_masks is not None else ()
            present = int(sum(bool(m.any()) for m in masks))
            if st.cat.n_objects > 1 and present >= 2:
                want.setdefault(b.multi_object_size, []).append(j)
            elif not (b.cross_image_saliency and others is not None and indices[j] is not None):
                want.setdefault(b.single_object_size, []).append(j)
        pre: list[dict] = [{} for _ in states]
        for size, idx in want.items():
            t0 = time.perf_counter()
            imgs = [cv2.resize(st.bgr if b.saliency_color_order == "bgr" else st.rgb, (size, size))
                    for st in (states[j] for j in idx)]
            for j, f in zip(idx, self.extractor.batch(imgs, size)):
                pre[j][size] = f
            share = (time.perf_counter() - t0) / len(idx)
            for j in idx:
                states[j].timings["saliency_cnn"] = states[j].timings.get("saliency_cnn", 0.0) + share
        return pre

    def _cross_saliency(self, sal: SaliencyResult, rgb: np.ndarray, others: Optional[CrossImageBank],
                        index: Optional[int], feats: Optional[torch.Tensor], notes: list[str],
                        tr: Optional[dict]) -> SaliencyResult:
        """Combine the single-image saliency with the cross-image score map (at the image size).
        ``feats``: this image's pass-1 features (:meth:`saliency_features`; given with ``others``)."""
        grid, got = scores_against(others, index, feats)
        if grid is None:
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

    # ------------------------------------------------------------ the stages of one image
    def _predict(self, image: Union[np.ndarray, str, Path], category: Union[str, CategoryConfig],
                 *, category_name: Optional[str] = None, trace: bool = False,
                 others: Optional[CrossImageBank] = None, index: Optional[int] = None) -> Prediction:
        st = self._start(image, category, category_name, trace)
        b = self.behaviour
        with st.timed("detector_backbone"):
            self.detector.set_image(st.rgb)
        with st.timed("sam_encoder"):
            self.refiner.set_image(st.bgr if b.sam_color_order == "bgr" else st.rgb)
        try:
            self._object_stage(st)
            self._defect_candidates(st)
            self._saliency_stage(st, others, index)
            self._masks_and_rescoring(st)
            self._fusion(st)
        finally:
            self.detector.reset_image()
            self.refiner.reset_image()
        return self._prediction(st)

    def _start(self, image, category, category_name, trace: bool) -> "_ImageState":
        """The image (RGB and BGR), its category settings and prompts, empty records."""
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else as_rgb_uint8(image)
        if isinstance(category, CategoryConfig):
            cat, name = category, category_name or "custom"
            prompts = [(c.replace("{c}", name), f.replace("{c}", name))
                       for c, f in [tuple(p) for p in self.config.general_prompts]] + [tuple(p) for p in cat.prompts]
        else:
            cat, name = self.config.category(category), category
            prompts = self.config.language_prompts(category)
        return _ImageState(rgb=rgb, bgr=np.ascontiguousarray(rgb[:, :, ::-1]), cat=cat, name=name,
                           prompts=prompts, trace={} if trace else None)

    def _object_stage(self, st: "_ImageState") -> None:
        """SPEC §3.3: object boxes, their masks where they are used (multi-object saliency, a trace,
        the straightforward schedule), the area rule; the object area and the defect area limit."""
        b, cat = self.behaviour, st.cat
        with st.timed("detector_object"):
            boxes, _, cands, largest = self._propose("object", [(cat.object, None)], 0.0, cat.object_max_area,
                                                     st.width, st.height, st.candidates, st.trace)
        with st.timed("sam_object"):
            need_masks = self.straightforward_masks or st.trace is not None or cat.n_objects > 1
            masks, fr = None, None
            if len(boxes) and (need_masks or b.area_rule == "masks"):
                low = self.refiner.low_res_logits(R.to_pixel_xyxy(boxes, st.width, st.height))
                if need_masks:
                    masks = self.refiner.masks_of(low) if not self.straightforward_masks else self._full_masks(low)
                    fr = R.mask_area_fractions(masks)
                else:
                    fr, _ = self.refiner.mask_stats(low)
            elif need_masks:
                masks = np.zeros((0, st.height, st.width), bool)
            if fr is not None:
                for c, f in zip(cands, fr):
                    c.mask_area = float(f)
            if b.area_rule == "masks" and fr is not None:
                keep = R.mask_area_keep(fr, 0.0, cat.object_max_area)
                for c, k in zip(cands, keep):
                    if not k:
                        c.dropped = DROP_AREA
                boxes, cands = boxes[torch.from_numpy(keep)], [c for c, k in zip(cands, keep) if k]
                masks = masks[keep] if masks is not None else None
                largest = torch.tensor(float(fr[keep].max()), dtype=torch.float32) if keep.any() else None
            for c in cands:
                c.kept = True
        st.obj_boxes, st.obj_masks = boxes, masks
        st.object_area = R.largest_area(torch.zeros(0)) if largest is None else largest
        if largest is None:
            st.notes.append("no object box survived: object_area = 1.0")
        st.max_area = R.defect_max_area(st.object_area, cat.area_ratio)

    def _full_masks(self, low: torch.Tensor) -> np.ndarray:
        """Every full-size mask of ``low``, a chunk at a time (the straightforward way)."""
        step = self.refiner.chunk_size()
        return np.concatenate([self.refiner.upscale(low[i:i + step]) for i in range(0, len(low), step)])

    def _defect_candidates(self, st: "_ImageState") -> None:
        """SPEC §3.4: defect boxes of every caption that pass the score, box-area and phrase filters."""
        with st.timed("detector_defect"):
            st.def_boxes, st.def_scores, st.def_cands, _ = self._propose(
                "defect", st.prompts, 0.0, st.max_area, st.width, st.height, st.candidates, st.trace)

    def _saliency_stage(self, st: "_ImageState", others: Optional[CrossImageBank], index: Optional[int],
                        pre: Optional[dict] = None) -> None:
        """SPEC §3.6 (needs only the object masks), combined with the cross-image score map when the
        behaviour asks for it. ``pre``: this image's CNN features already computed with its batch
        ({input size: features}, :meth:`_batch_saliency_features`); the CNN runs for any other."""
        b, cat = self.behaviour, st.cat
        extractor = _Precomputed(self.extractor, pre) if pre else self.extractor
        with st.timed("saliency"):
            sal_img = st.bgr if b.saliency_color_order == "bgr" else st.rgb
            # cross-image saliency: this image's pass-1 features are the single-object saliency's
            # input too (same image, size and colour order), so the CNN does not run twice
            cross_feats = None
            if b.cross_image_saliency and others is not None:
                if index is not None:
                    cross_feats = others.features(index)
                elif pre and b.single_object_size in pre:  # what saliency_features returns
                    cross_feats = pre[b.single_object_size][0].float().cpu()
                else:
                    cross_feats = self.saliency_features(st.rgb)
            obj_masks = st.obj_masks if st.obj_masks is not None else np.zeros((0, st.height, st.width), bool)
            sal = visual_saliency(sal_img, obj_masks, cat.n_objects, extractor, neighbors=b.saliency_neighbors,
                                  n=b.saliency_n, single_size=b.single_object_size, multi_size=b.multi_object_size,
                                  single_fn=self.single_saliency, multi_fn=self.multi_saliency,
                                  single_features=None if cross_feats is None else cross_feats.to(self.device))
            if sal.note:
                st.notes.append(sal.note)
        if b.cross_image_saliency:
            with st.timed("cross_image"):
                sal = self._cross_saliency(sal, st.rgb, others, index, cross_feats, st.notes, st.trace)
        st.sal = sal

    def _masks_and_rescoring(self, st: "_ImageState") -> None:
        """SPEC §3.5, 3.7: SAM masks of the defect boxes, the mask-area rule, re-scoring. The decoder
        runs once for all boxes; of each mask only its area and mean saliency are needed, computed
        from full-size masks a chunk at a time (:meth:`~saa.models.sam.MaskUpscaling.mask_stats`), which
        are kept only in the straightforward schedule and with a trace."""
        b = self.behaviour
        with st.timed("sam_defect"):
            n_def = len(st.def_cands)
            areas, rescored = np.zeros(n_def), np.zeros(n_def)
            all_masks = None
            st.low = None
            if n_def:
                st.low = self.refiner.low_res_logits(R.to_pixel_xyxy(st.def_boxes, st.width, st.height))
                if self.straightforward_masks or st.trace is not None:
                    areas, rescored, all_masks = self._full_mask_stats(st, keep_masks=st.trace is not None)
                else:
                    areas, means = self.refiner.mask_stats(st.low, st.sal.map)
                    rescored = _rescore_means(st.def_scores, means, st.sal.map.dtype, b.rescore_gamma)
            for c, f in zip(st.def_cands, areas):
                c.mask_area = float(f)
            keep = R.mask_area_keep(areas, 0.0, st.max_area) if b.area_rule == "masks" else np.ones(n_def, bool)
            for c, k in zip(st.def_cands, keep):
                if not k:
                    c.dropped = DROP_AREA
            idx = np.flatnonzero(keep)  # candidates that take part in the top-K
            st.def_cands, st.def_scores = [st.def_cands[i] for i in idx], st.def_scores[idx]
            st.rescored, st.low_index = rescored[idx], idx
            st.def_masks = all_masks[idx] if all_masks is not None else np.zeros((0, st.height, st.width), bool)

    def _full_mask_stats(self, st: "_ImageState", keep_masks: bool):
        """Areas and re-scored values from the full-size masks, a chunk at a time (memory stays
        bounded for large images and many boxes); the masks themselves only with ``keep_masks``."""
        n, step = len(st.low), self.refiner.chunk_size()
        areas, rescored, kept = np.zeros(n), np.zeros(n), []
        for i in range(0, n, step):
            m = self.refiner.upscale(st.low[i:i + step])
            areas[i:i + step] = R.mask_area_fractions(m)
            rescored[i:i + step] = R.rescore(st.def_scores[i:i + step], m, st.sal.map, self.behaviour.rescore_gamma)
            if keep_masks:
                kept.append(m)
        return areas, rescored, (np.concatenate(kept) if keep_masks else None)

    def _fusion(self, st: "_ImageState") -> None:
        """SPEC §3.7: the K highest re-scored regions, their full-size masks, the fused map."""
        cat = st.cat
        with st.timed("fusion"):
            st.kept_idx = np.zeros(0, dtype=int)
            st.kept_masks = np.zeros((0, st.height, st.width), bool)
            if len(st.def_cands):
                st.kept_idx = R.top_k(st.rescored, cat.k_mask)
                for c, s in zip(st.def_cands, st.rescored):
                    c.rescored = float(s)
                    c.dropped = DROP_TOP_K
                for i in st.kept_idx:
                    st.def_cands[i].kept, st.def_cands[i].dropped = True, None
                low = st.low[torch.from_numpy(st.low_index[st.kept_idx])]
                st.kept_masks = self.refiner.upscale(low) if self.straightforward_masks else self.refiner.masks_of(low)
                st.full = R.fuse(st.kept_masks, st.rescored[st.kept_idx], np.arange(len(st.kept_idx)),
                                 self.behaviour.fusion_delta, (st.height, st.width))
            else:
                st.full = np.zeros((st.height, st.width), dtype=np.float64)
                st.notes.append("no defect candidate survived: the anomaly map is all zeros")
            st.out_map = R.resize_map(st.full, self.config.out_size)

    def _prediction(self, st: "_ImageState") -> Prediction:
        if st.trace is not None:
            st.trace.update(object_masks=st.obj_masks, defect_masks=st.def_masks, defect_scores=st.def_scores,
                            rescored=st.rescored, topk=st.kept_idx, saliency=st.sal.map, anomaly_map_f64=st.out_map)
        width, height = st.width, st.height
        return Prediction(
            category=st.name,
            anomaly_map=np.nan_to_num(st.out_map.astype(np.float32)),
            anomaly_map_full=np.nan_to_num(st.full.astype(np.float32)),
            saliency=np.nan_to_num(np.asarray(st.sal.map, dtype=np.float32)),
            object_boxes=(R.to_pixel_xyxy(st.obj_boxes, width, height).numpy() if len(st.obj_boxes)
                          else np.zeros((0, 4), np.float32)),
            object_masks=st.obj_masks,
            candidates=st.candidates,
            kept_masks=st.kept_masks,
            object_area=_f(st.object_area),
            defect_max_area=_f(st.max_area),
            saliency_branch=st.sal.branch,
            timings=st.timings,
            notes=st.notes,
            trace=st.trace or {},
            method="saa",
            method_label=f"SAA+ (preset {self.config.preset})",
        )


def _share(states, name: str, seconds: float) -> None:
    """An equal share of a batched model call's time in each image's timings."""
    for st in states:
        st.timings[name] = seconds / len(states)


class _Precomputed:
    """The saliency CNN as :func:`visual_saliency` calls it (``extractor(image, size)``), answering
    from features computed with the batch for the sizes it has them for (the same input: the image
    resized to size x size in the same colour order), running the CNN for any other size."""

    def __init__(self, extractor, features: dict):
        self.extractor, self.features = extractor, features

    def __call__(self, image: np.ndarray, size: int) -> torch.Tensor:
        hit = self.features.get(size)
        return hit if hit is not None else self.extractor(image, size)


@dataclass
class _ImageState:
    """What the stages of one image read and write (the image, its settings, every intermediate)."""

    rgb: np.ndarray
    bgr: np.ndarray
    cat: CategoryConfig
    name: str
    prompts: list
    trace: Optional[dict]
    candidates: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    # filled by the stages, in order
    obj_boxes: Any = None
    obj_masks: Any = None
    object_area: Any = None
    max_area: Any = None
    def_boxes: Any = None
    def_scores: Any = None
    def_cands: Any = None
    sal: Any = None
    low: Any = None
    low_index: Any = None
    rescored: Any = None
    def_masks: Any = None
    kept_idx: Any = None
    kept_masks: Any = None
    full: Any = None
    out_map: Any = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @contextmanager
    def timed(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - t0

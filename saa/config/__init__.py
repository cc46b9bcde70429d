"""Run configuration: the YAML schema, ``--set`` overrides and readable validation errors.

A configuration file (see ``configs/*.yaml``) holds the method and its options, the model files,
the behaviour preset of SAA+ (``official`` reproduces the authors' code, ``paper`` the paper's
description; SPEC §3.8; ``improved`` is ours, not the authors': ``paper`` plus cross-image
saliency), the general defect prompts and, per category, the expert prompts and property values
(SPEC §3.1, §6).

One module a job: :mod:`.fields` (field types, limits), :mod:`.behaviour` (SAA+'s switches and
presets), :mod:`.schema` (the config model and its queries), :mod:`.yaml_text` (bounded YAML in
and out), :mod:`.overrides` (``--set``), :mod:`.messages` (one-line errors), :mod:`.loading`
(file or dict -> validated config). Entry points used by the rest of the package::

    cfg = load_config("configs/mvtec.yaml", ["models.device=cuda", "out_size=256"])
    cfg.resolved_behaviour()          # every switch concrete
    cfg.category("bottle")            # CategoryConfig (ConfigError names the closest category)
    cfg.language_prompts("bottle")    # [(caption, filter), ...] general prompts first
    cfg.resolve_path(cfg.models.sam.checkpoint)

Every problem a user can cause is raised as :class:`saa.errors.ConfigError` with one message
that names the file, the dotted key path, the offending value and what is allowed.
"""
from ..errors import ConfigError
from ..settings import WEIGHTS_DIR_ENV  # noqa: F401 (re-exported)
from .behaviour import (CROSS_IMAGE_KEYS, PRESETS, BehaviourConfig, ColorOrder, CombineRule, ResolvedBehaviour,
                        register_preset)
from .fields import (MAX_CROSS_IMAGE_K, MAX_EVAL_SIZE, MAX_MULTI_OBJECT_SIZE, MAX_NAME_LENGTH, MAX_OUT_SIZE,
                     MAX_SINGLE_OBJECT_SIZE, AreaRatio, CrossImageK, NonEmptyStr, NonNegativeFloat, NonNegativeInt,
                     OutSize, PathText, PlainName, PositiveInt, PromptPair, UnitFloat)
from .loading import config_from_dict, load_config
from .messages import validate_section
from .overrides import apply_overrides
from .schema import (CategoryConfig, DatasetConfig, DatasetOptions, GroundingConfig, ModelsConfig, SaaConfig,
                     SaliencyConfig, SamConfig, parse_property_sentence)
from .yaml_text import MAX_CONFIG_BYTES, MAX_YAML_NODES, _bounded_yaml  # noqa: F401 (used by the dataset check)

__all__ = [
    "CROSS_IMAGE_KEYS", "PRESETS", "BehaviourConfig", "CategoryConfig", "ColorOrder", "CombineRule", "ConfigError",
    "DatasetConfig", "DatasetOptions", "GroundingConfig", "ModelsConfig", "PromptPair", "ResolvedBehaviour",
    "SaaConfig", "SaliencyConfig", "SamConfig", "apply_overrides", "config_from_dict", "load_config",
    "parse_property_sentence", "register_preset", "validate_section", "MAX_OUT_SIZE", "MAX_EVAL_SIZE",
    "MAX_SINGLE_OBJECT_SIZE", "MAX_MULTI_OBJECT_SIZE", "MAX_CROSS_IMAGE_K", "MAX_NAME_LENGTH", "MAX_CONFIG_BYTES",
    "MAX_YAML_NODES", "AreaRatio", "CrossImageK", "NonEmptyStr", "NonNegativeFloat", "NonNegativeInt", "OutSize",
    "PathText", "PlainName", "PositiveInt", "UnitFloat",
]

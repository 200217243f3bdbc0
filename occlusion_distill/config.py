"""``RunConfig``: one fully resolved, frozen description of a run; presets fill what the user left out."""

from __future__ import annotations

import difflib
import json
import keyword
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import UsageError, check_number

#: the backbone a run gets when none is named; a string, so that the config needs no model code
DEFAULT_BACKBONE = "simple-cnn"
MIN_IMAGE_SIZE = 32

# Presets size a run. "default" is the README's main job (a few minutes on 2 CPU cores); "smoke" is
# for tests and CI (well under a minute). Dataset arguments apply to the built-in synthfaces only.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "image_size": 32, "teacher_epochs": 3, "student_epochs": 2, "batch_size": 64,
        "synthfaces": {"n_train": 640, "n_val": 192, "n_test": 320},
    },
    "default": {
        "image_size": 40, "teacher_epochs": 8, "student_epochs": 4, "batch_size": 64,
        "synthfaces": {"n_train": 5000, "n_val": 600, "n_test": 1500},
    },
}


#: the ranges ``--augment default`` stands for: the usual small shift, scale and roll of face crops and a
#: mild photometric change
AUGMENT_DEFAULTS: dict[str, float] = {"translate": 0.08, "scale": 0.1, "rotate": 10.0, "brightness": 0.2,
                                      "contrast": 0.2}
_AUGMENT_LIMITS = {"translate": (0.0, 0.5, "of the image size"), "scale": (0.0, 0.5, "relative"),
                   "rotate": (0.0, 180.0, "degrees"), "brightness": (0.0, 1.0, "of full range"),
                   "contrast": (0.0, 1.0, "relative")}


def resolve_augment(options: dict[str, Any] | str | None) -> dict[str, float]:
    """``--augment`` as given -> every range, defaults filled in: ``"default"`` is ``AUGMENT_DEFAULTS``; a
    dict overrides some of them; None, ``{}``, False, "none" or "off" (no augmentation) is ``{}``.

    Raises ``UsageError`` (one line) for anything else, an unknown key or a value out of range.
    """
    if options is None or options is False or options in ("none", "off") or options == {}:
        return {}
    if options == "default":
        return dict(AUGMENT_DEFAULTS)
    if not isinstance(options, dict):
        raise UsageError(f"augment must be 'default' or a mapping of {', '.join(AUGMENT_DEFAULTS)}, not {options!r}")
    unknown = sorted(set(options) - set(AUGMENT_DEFAULTS))
    if unknown:
        hint = next(iter(difflib.get_close_matches(unknown[0], AUGMENT_DEFAULTS, n=1, cutoff=0.6)), None)
        raise UsageError(f"augment: unknown option '{unknown[0]}'{f'; did you mean {hint!r}?' if hint else ''} "
                         f"(options: {', '.join(AUGMENT_DEFAULTS)})")
    out = dict(AUGMENT_DEFAULTS)
    for name, value in options.items():
        lo, hi, unit = _AUGMENT_LIMITS[name]
        out[name] = check_number(value, name, lo, hi, plugin="augment", unit=unit)
    return out


#: ``--mix`` modes and the α of the Beta(α, α) their coefficient is drawn from when none is given: mixup 0.4
#: (Zhang et al., ICLR 2018, the top of their ImageNet range), CutMix 1.0 (Yun et al., ICCV 2019)
MIX_DEFAULTS: dict[str, float] = {"mixup": 0.4, "cutmix": 1.0}


def resolve_mix(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """``--mix`` as given -> ``{"mode": ..., "alpha": ...}``: "mixup", "cutmix", "mixup=0.2", or such a
    mapping; None, ``{}``, False, "none" or "off" (no mixing) is ``{}``. Raises ``UsageError`` (one line)
    for an unknown mode or an α that is not a positive number."""
    if value is None or value is False or value in ("none", "off") or value == {}:
        return {}
    if isinstance(value, str):
        mode, sep, alpha = value.partition("=")
        value = {"mode": mode.strip(), **({"alpha": alpha.strip()} if sep else {})}
    if not isinstance(value, dict) or set(value) - {"mode", "alpha"} or value.get("mode") not in MIX_DEFAULTS:
        raise UsageError(f"mix must be {', '.join(MIX_DEFAULTS)} or none, optionally with =ALPHA (mixup=0.2), "
                         f"not {value!r}")
    alpha = value.get("alpha", MIX_DEFAULTS[value["mode"]])
    if isinstance(alpha, str):
        try:
            alpha = float(alpha)
        except ValueError:
            raise UsageError(f"mix: alpha must be a number, not {alpha!r}") from None
    return {"mode": value["mode"], "alpha": check_number(alpha, "alpha", 1e-3, 100.0, plugin="mix", unit="Beta(α, α)")}


def default_teacher_outputs(augment: Any, mix: Any) -> str:
    """Where the teacher's outputs come from unless ``--teacher-outputs`` says: ``"online"`` when faces are
    augmented or mixed (a clean view drawn afresh each epoch, or mixed in each batch, has no outputs to
    compute once), else ``"cached"``. ``augment`` and ``mix`` as ``--augment`` and ``--mix`` take them."""
    return "online" if resolve_augment(augment) or resolve_mix(mix) else "cached"


@dataclass(frozen=True)
class RunConfig:
    task: str = "expression"
    occlusion: str = "lower-half"
    distiller: str = "kd"
    backbone: str = DEFAULT_BACKBONE
    dataset: str = "synthfaces"
    preset: str = "default"
    image_size: int = 40
    channels: int | None = None  # None: the data set's native channels
    teacher_epochs: int = 8
    student_epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    student_lr: float = 1e-3
    weight_decay: float = 5e-4
    flip: bool = True
    seed: int = 0
    eval_seed: int = 12345  # occlusions of val/test faces: the same for every run and seed
    device: str = "auto"
    pretrained: bool = False
    weights: str | None = None
    num_workers: int = 0
    teacher_outputs: str = "cached"  # cached: teacher run once per clean face and flip; online: every step
    checkpoint_every: int = 0  # also save a stage's state every N steps (0: at the end of each epoch only)
    amp: str = "auto"  # mixed precision: auto (bf16 on a GPU that has it, none on CPU), bf16, fp16, off
    compile: bool = False  # torch.compile the network
    occlusion_args: dict[str, Any] = field(default_factory=dict)
    distiller_args: dict[str, Any] = field(default_factory=dict)
    dataset_args: dict[str, Any] = field(default_factory=dict)
    backbone_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the backbone's constructor
    # training augmentation of every stage (data.augment.FaceAugment's ranges, all of them); {}: flips only
    augment: dict[str, Any] = field(default_factory=dict)
    # the students' batches mixed, clean and occluded views alike (data.mixing.PairMix); {}: no mixing
    mix: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # one form for the same augmentation in every key ("default", a partial dict: all its ranges)
        if self.augment != {}:
            object.__setattr__(self, "augment", resolve_augment(self.augment))
        if self.mix != {}:
            object.__setattr__(self, "mix", resolve_mix(self.mix))

    @classmethod
    def from_options(cls, preset: str = "default", **options: Any) -> "RunConfig":
        """Preset values, then every option that is not None."""
        if preset not in PRESETS:
            raise UsageError(f"unknown preset '{preset}'; presets: {', '.join(PRESETS)}")
        values: dict[str, Any] = {k: v for k, v in PRESETS[preset].items() if k in _FIELDS}
        values["preset"] = preset
        dataset = options.get("dataset") or cls.dataset
        dataset_args = dict(PRESETS[preset].get(dataset, {}))
        dataset_args.update(options.pop("dataset_args", None) or {})
        unknown = set(options) - _FIELDS
        if unknown:
            raise UsageError(f"unknown run option(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in options.items() if v is not None})
        values["dataset_args"] = dataset_args
        if default_teacher_outputs(values.get("augment"), values.get("mix")) == "online":
            values.setdefault("teacher_outputs", "online")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            raise UsageError(f"image size {self.image_size} is too small: the minimum is {MIN_IMAGE_SIZE} px")
        if self.channels not in (None, 1, 3):
            raise UsageError(f"channels must be 1 or 3, not {self.channels}")
        for name in ("seed", "eval_seed"):  # numpy's SeedSequence takes no negative seed
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')} must be a whole number >= 0, not {getattr(self, name)!r}")
        for name in ("teacher_epochs", "student_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.lr <= 0 or self.student_lr <= 0:
            raise UsageError("learning rates must be positive")
        if self.teacher_outputs not in ("cached", "online"):
            raise UsageError(f"teacher-outputs must be 'cached' or 'online', not '{self.teacher_outputs}'")
        if self.augment:  # resolved, every range checked, by __post_init__
            if self.teacher_outputs == "cached":
                raise UsageError("--augment draws a new clean view every epoch, so the teacher's outputs cannot "
                                 "be cached: use --teacher-outputs online (the default with --augment)")
        if self.mix and self.teacher_outputs == "cached":
            raise UsageError("--mix mixes the clean faces the teacher sees in every batch, so its outputs cannot be "
                             "cached: use --teacher-outputs online (the default with --mix)")
        if self.checkpoint_every < 0:
            raise UsageError(f"checkpoint-every must be >= 0 steps, not {self.checkpoint_every}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise UsageError(f"amp must be auto, off, bf16 or fp16, not '{self.amp}'")
        if self.num_workers < 0:
            raise UsageError(f"num-workers must be >= 0, not {self.num_workers}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """A config written by ``to_dict`` (a run's config.json); extra keys are ignored."""
        cfg = cls(**{k: v for k, v in values.items() if k in _FIELDS})
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "RunConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_FIELDS = {f.name for f in fields(RunConfig)}


def option_name(key: str) -> str:
    """An option as a user types it (``bank-size``, ``lambda``) -> the keyword argument a plugin's
    constructor takes (``bank_size``, ``lambda_``: Python keywords get a trailing underscore)."""
    key = key.strip().replace("-", "_")
    return key + "_" if keyword.iskeyword(key) else key


def parse_kv(pairs: tuple[str, ...] | list[str], what: str) -> dict[str, Any]:
    """``key=value`` strings -> kwargs; values are read as JSON when they parse (numbers, lists, true).

    Raises ``UsageError`` for a pair without ``=`` and for an option given twice (``lambda=1`` beside
    ``lambda_=0.5`` too): which one was meant is the user's to say, not a silent last-one-wins.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = option_name(key)
        if not sep or not key.isidentifier():
            raise UsageError(f"{what} options are key=value, not '{pair}'")
        if key in out:
            raise UsageError(f"{what} option '{pair.partition('=')[0].strip()}' is given twice")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out

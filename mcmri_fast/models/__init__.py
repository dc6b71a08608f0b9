"""The model registry: a name maps to a constructor, its default configuration, its loss and the data
it expects, so the training, evaluation and demo workflows handle every model the same way.

A model is a `torch.nn.Module` whose forward takes the batch dict of `mcmri_fast.data.datasets`
(tensors on the model's device, batched: images [B, 1, H, W], mask [B, W] or [B, H, W], "scale" and
"offset" [B]) and returns the reconstruction with the shape and dtype of batch["target"], in the
normalised units of the data options in `ModelSpec.data` (image = normalised · scale + offset). A model
with more outputs for its loss (FSMNet's frequency-branch image) returns a dict with the reconstruction
under "image"; `reconstruction(output)` takes it out of either form.

Adding a model: write one module under `mcmri_fast/models/` that builds its `ModelSpec`s and calls
`register` at import. Every public module of this package (a name without a leading underscore) is
imported when `mcmri_fast.models` is, in name order, so nothing else needs editing; an import error in
one of them propagates (a model never silently disappears from the registry).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import numbers
import pkgutil
from typing import Any, Callable

import torch

__all__ = ["ModelSpec", "UnknownModelError", "register", "get_model_spec", "model_names", "build_model", "reconstruction"]

LOSSES = ("l1", "mse", "ssim")
NORMALIZATIONS = ("instance", "volume_max", None)
OPTIMIZERS = ("adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine")
DEMO_KEYS = {"model_config", "epochs", "lr"}


class UnknownModelError(ValueError):
    """A model name that is not registered; the message lists the registered names."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the workflows need to know about one model.

    Attributes:
        name: the registry key (what `--model` takes).
        build: build(**config) -> torch.nn.Module.
        config: the paper's default constructor arguments; a run may override any of them.
        loss: "l1", "mse" or "ssim" (1 − SSIM, `mcmri_fast.metrics.SSIMLoss`) on the reconstruction, or
            the model's own loss(output, batch) -> 0-d tensor (a paper's composite loss).
        data: the dataset options the model expects, passed to the dataset constructors:
            {"magnitude": bool, "normalization": "instance" | "volume_max" | None}, and optionally
            "misalignment": the σ of the reference's misalignment a run trains with unless told otherwise
            (DUN-SA's default; 0 when absent), and "noise": the k-space noise level, a fraction of the
            mean intensity, that a run trains with unless told otherwise (MANet's 0.1; 0 when absent).
        optimizer: the paper's optimiser, {"name": "adam" | "adamw" | "rmsprop", "lr": float, **kwargs}.
        schedule: {"name": "none"} | {"name": "step", "step_size": int, "gamma": float} |
            {"name": "cosine"}, stepped once per epoch.
        epochs: the paper's default number of epochs (0 for a model that is not trained).
        batch_size: the paper's default batch size.
        trainable: False for models without parameters to train (zero-filled): training is refused,
            evaluation runs without a checkpoint.
        description: one line for `mcmri info` and the CLI help.
        demo: what `mcmri demo` changes of the training to fit its CPU budget: any of the keys
            "model_config" (a narrower network), "epochs" and "lr" (empty: the demo's defaults).

    The dict fields are copied on construction, so the caller's dicts can change without touching the
    registry's defaults.
    """

    name: str
    build: Callable[..., torch.nn.Module]
    config: dict
    loss: str | Callable[[Any, dict], torch.Tensor]
    data: dict
    optimizer: dict
    schedule: dict
    epochs: int
    batch_size: int
    trainable: bool
    description: str
    demo: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValueError(f"ModelSpec.name must be a non-empty string without surrounding spaces, got {self.name!r}")
        where = f"ModelSpec {self.name!r}"
        if not callable(self.build):
            raise TypeError(f"{where}: build must be callable, got {type(self.build).__name__}")
        for field in ("config", "data", "optimizer", "schedule", "demo"):
            value = getattr(self, field)
            if not isinstance(value, dict):
                raise TypeError(f"{where}: {field} must be a dict, got {type(value).__name__}")
            object.__setattr__(self, field, dict(value))  # a copy: the registry's defaults stay put
        if not callable(self.loss) and self.loss not in LOSSES:
            raise ValueError(f"{where}: loss must be one of {LOSSES} or a callable, got {self.loss!r}")
        _check_data(where, self.data)
        _check_optimizer(where, self.optimizer)
        _check_schedule(where, self.schedule)
        if not isinstance(self.trainable, bool):
            raise TypeError(f"{where}: trainable must be a bool, got {type(self.trainable).__name__}")
        if not _is_int(self.epochs) or self.epochs < (1 if self.trainable else 0):
            raise ValueError(f"{where}: epochs must be an integer >= {1 if self.trainable else 0}, got {self.epochs!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"{where}: batch_size must be a positive integer, got {self.batch_size!r}")
        unknown_demo = set(self.demo) - DEMO_KEYS
        if unknown_demo:
            raise ValueError(f"{where}: demo takes the keys {sorted(DEMO_KEYS)}, got {sorted(unknown_demo)}")
        unknown = _unknown_arguments(self.build, self.demo.get("model_config", {}))
        if unknown:
            raise ValueError(f"{where}: demo['model_config'] has keys that build does not take: {', '.join(unknown)}")
        if not isinstance(self.description, str):
            raise TypeError(f"{where}: description must be a string, got {type(self.description).__name__}")
        unknown = _unknown_arguments(self.build, self.config)
        if unknown:
            raise ValueError(f"{where}: config has keys that build does not take: {', '.join(unknown)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def _check_data(where: str, data: dict) -> None:
    if not {"magnitude", "normalization"} <= set(data) <= {"magnitude", "normalization", "misalignment", "noise"}:
        raise ValueError(f"{where}: data must have the keys 'magnitude' and 'normalization' (and may have "
                         f"'misalignment' and 'noise'), got {sorted(data)}")
    for key in ("misalignment", "noise"):
        if key in data and not (_is_number(data[key]) and data[key] >= 0):
            raise ValueError(f"{where}: data[{key!r}] must be a number >= 0, got {data[key]!r}")
    if not isinstance(data["magnitude"], bool):
        raise TypeError(f"{where}: data['magnitude'] must be a bool, got {data['magnitude']!r}")
    if data["normalization"] not in NORMALIZATIONS:
        raise ValueError(f"{where}: data['normalization'] must be one of {NORMALIZATIONS}, got {data['normalization']!r}")
    if data["normalization"] == "instance" and not data["magnitude"]:
        raise ValueError(f"{where}: data normalization 'instance' needs magnitude images (magnitude=True)")


def _check_optimizer(where: str, optimizer: dict) -> None:
    if optimizer.get("name") not in OPTIMIZERS:
        raise ValueError(f"{where}: optimizer['name'] must be one of {OPTIMIZERS}, got {optimizer.get('name')!r}")
    if not _is_positive_number(optimizer.get("lr")):
        raise ValueError(f"{where}: optimizer['lr'] must be a positive number, got {optimizer.get('lr')!r}")


def _check_schedule(where: str, schedule: dict) -> None:
    name = schedule.get("name")
    if name not in SCHEDULES:
        raise ValueError(f"{where}: schedule['name'] must be one of {SCHEDULES}, got {name!r}")
    expected = {"none": {"name"}, "cosine": {"name"}, "step": {"name", "step_size", "gamma"}}[name]
    if set(schedule) != expected:
        raise ValueError(f"{where}: a {name!r} schedule takes exactly the keys {sorted(expected)}, got {sorted(schedule)}")
    if name == "step":
        if not _is_int(schedule["step_size"]) or schedule["step_size"] < 1:
            raise ValueError(f"{where}: schedule['step_size'] must be a positive integer, got {schedule['step_size']!r}")
        if not _is_positive_number(schedule["gamma"]):
            raise ValueError(f"{where}: schedule['gamma'] must be a positive number, got {schedule['gamma']!r}")


def _unknown_arguments(build: Callable, arguments: dict) -> list[str]:
    """The names in `arguments` that `build` cannot take as keywords (none if it takes **kwargs or
    its signature cannot be read)."""
    try:
        parameters = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return []
    accepted = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return sorted(set(arguments) - accepted)


def reconstruction(output: Any) -> torch.Tensor:
    """The reconstruction in a model's output: the output itself, or its "image" entry when it is a dict."""
    if isinstance(output, dict):
        if "image" not in output:
            raise KeyError(f"a model's dict output must hold the reconstruction under 'image', got keys {sorted(output)}")
        return output["image"]
    return output


def magnitude_images(batch: dict, model: str, keys: tuple[str, ...] = ("zero_filled", "reference")) -> tuple:
    """batch[key] for each key, checked to be real [B, 1, H, W] tensors (the magnitude images that the
    papers' models take): ValueError for another shape, TypeError for complex images, naming the model."""
    images = tuple(batch[key] for key in keys)
    for name, image in zip(keys, images):
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 1:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"batch[{name!r}] must be [B, 1, H, W], got {got}")
        if image.is_complex():
            raise TypeError(f"{model} takes magnitude images (data magnitude=True), got complex batch[{name!r}]")
    return images


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds `spec` to the registry under spec.name and returns it; a name already registered is
    refused (ValueError), so two modules cannot silently shadow each other."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def model_names() -> tuple[str, ...]:
    """The registered model names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered as `name`; UnknownModelError (a ValueError) listing the known names if none."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; the registered models are: {', '.join(model_names())}") from None


def build_model(name: str, **overrides: Any) -> torch.nn.Module:
    """A new module of model `name`: spec.build(**{**spec.config, **overrides}).

    An override the constructor does not take raises ValueError naming it and the keys it takes.
    """
    spec = get_model_spec(name)
    unknown = _unknown_arguments(spec.build, overrides)
    if unknown:
        raise ValueError(
            f"model {name!r} has no configuration key(s) {', '.join(unknown)}; its keys are: {', '.join(sorted(spec.config))}"
        )
    model = spec.build(**{**spec.config, **overrides})
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model {name!r}: build returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_model_modules() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_model_modules()

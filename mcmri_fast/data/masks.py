"""k-space sampling masks: fastMRI 0.3.0's mask functions, bit for bit, and the masks of the papers.

Conventions
-----------
- k-space is centred (fastMRI convention, see `mcmri_fast.data.fft`): DC sits at (H // 2, W // 2).
- A mask function is called with the (H, W) of the k-space grid and returns a `Mask`:
  * 1-D (Cartesian, column) masks: `mask` is a bool tensor [W] selecting columns (the last dim); it
    broadcasts over rows. `acs` counts the fully sampled centre columns (fastMRI's
    `num_low_frequencies`).
  * 2-D masks: `mask` is a bool tensor [H, W]. `acs` is the side of the largest fully sampled centred
    square: the s x s block starting at row (H - s + 1) // 2 and column (W - s + 1) // 2 (fastMRI's
    rule for placing a centre block, which always contains DC).
  * `acceleration` is the achieved one: points of the full grid (W for 1-D, H * W for 2-D) divided by
    the points sampled (inf for an empty mask).
  Masks are CPU tensors; move them with `.to(device)`.
- Randomness (fastMRI semantics): each mask function owns a `numpy.random.RandomState` (`.rng`, seeded
  by the constructor's `seed`). A call with `seed` (an int, or a tuple of ints such as
  `tuple(map(ord, filename))`) seeds it temporarily and restores its state afterwards, so seeded calls
  are reproducible and leave the stream untouched; unseeded calls advance the stream. Each call first
  chooses (centre fraction, acceleration), then draws the mask. A call that raises leaves the stream
  as it was. Data-loader workers and DDP ranks get their own streams with `reseed`.
- The call signature is `(shape, seed=None, offset=None)`; fastMRI's is `(shape, offset, seed)` with
  shape (..., W, 2): pass seed and offset by keyword.

Names (`mask_func(name, **kwargs)`; kwargs are the class's constructor arguments):

=====================  ===========================  ====================================================
name                   class                        what
=====================  ===========================  ====================================================
random                 RandomMaskFunc               fastMRI: centre + columns with probability
                                                    (W/R - n)/(W - n)
equispaced             EquiSpacedMaskFunc           fastMRI: centre + columns offset::R (integer R)
equispaced_fraction    EquispacedMaskFractionFunc   fastMRI: centre + spacing adjusted to reach R
magic                  MagicMaskFunc                fastMRI: Defazio's offset sampling (integer R)
magic_fraction         MagicMaskFractionFunc        fastMRI: offset sampling with adjusted spacing
random_exact           RandomExactMaskFunc          DUN-SA/SAN: exactly floor(W/R) columns, 32% in the
                                                    centre, the rest at random
equispaced_exact       EquispacedExactMaskFunc      DUN-SA/SAN: the same, the rest equispaced
uniform                UniformMaskFunc              MANet: regular spacing R through DC (+ centre)
radial                 RadialMaskFunc               2-D: N spokes through DC at evenly spaced angles
spiral                 SpiralMaskFunc               2-D: variable-density spiral through DC
gaussian               GaussianMaskFunc             2-D: random points, Gaussian density about DC,
                                                    fully sampled centre square
=====================  ===========================  ====================================================

Where fastMRI 0.3.0 crashes (ZeroDivisionError, numpy errors, slices with a float step) these classes
raise ValueError naming the argument instead: random with a centre covering the whole width,
equispaced_fraction with round(W * cf) * R >= W, magic_fraction with round(W * cf) >= round(W / R)
(cf >= 1/R) or round(W / R) <= 1, equispaced and magic with a non-integer acceleration, negative
offsets. equispaced_fraction with cf >= 1/R and an explicit offset does not crash in fastMRI (it
returns the centre alone); it is rejected here too, because the same configuration crashes there
without the offset.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Tuple, Union

import numpy as np
import torch

__all__ = [
    "Mask",
    "MaskFunc",
    "RandomMaskFunc",
    "EquiSpacedMaskFunc",
    "EquispacedMaskFractionFunc",
    "MagicMaskFunc",
    "MagicMaskFractionFunc",
    "RandomExactMaskFunc",
    "EquispacedExactMaskFunc",
    "UniformMaskFunc",
    "RadialMaskFunc",
    "SpiralMaskFunc",
    "GaussianMaskFunc",
    "MASK_NAMES",
    "default_mask_kwargs",
    "mask_func",
]

Seed = Union[int, Tuple[int, ...]]


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == gives no single truth value
class Mask:
    """A sampling mask and what it achieves.

    mask: bool tensor, [W] for 1-D (column) masks, [H, W] for 2-D masks, centred k-space (DC at
        (H // 2, W // 2)).
    acceleration: achieved acceleration, points of the full grid / points sampled (inf if none).
    acs: fully sampled centre. 1-D: centre columns (fastMRI's num_low_frequencies). 2-D: side of the
        largest fully sampled centred square (see the module docstring).
    """

    mask: torch.Tensor
    acceleration: float
    acs: int


# --------------------------------------------------------------------------------------------------
# argument checks


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_sequence(values: object, name: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    values = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if not _is_number(v):
            raise TypeError(f"{name} must hold real numbers, got {v!r}")
        if not math.isfinite(v):
            raise ValueError(f"{name} must hold finite numbers, got {v!r}")
    return values


def _check_accelerations(values: object, integer: bool = False,
                         name: str = "accelerations") -> list[Union[int, float]]:
    """Accelerations >= 1; ints stay ints (fastMRI's arithmetic), integral floats become ints where
    `integer` (fastMRI slices with them)."""
    out: list[Union[int, float]] = []
    for v in _check_sequence(values, name):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v!r}")
        if isinstance(v, numbers.Integral):
            out.append(int(v))
        elif integer:
            if float(v) != int(v):
                raise ValueError(f"{name} must be integers for this mask (it samples every R-th "
                                 f"column), got {v!r}")
            out.append(int(v))
        else:
            out.append(float(v))
    return out


def _check_center_fractions(values: object, name: str = "center_fractions") -> list[float]:
    out = []
    for v in _check_sequence(values, name):
        if not 0 <= v < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {v!r}")
        out.append(float(v))
    return out


def _check_seed(seed: object, name: str = "seed") -> Union[Seed, None]:
    """None, an int in [0, 2**32), or a non-empty sequence of such ints (kept as a tuple: numpy seeds
    an int and a sequence differently)."""
    if seed is None:
        return None

    def one(v: object) -> int:
        if isinstance(v, bool):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {v!r}")
        try:
            i = operator.index(v)
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of ints, got {v!r}") from None
        if not 0 <= i < 2**32:
            raise ValueError(f"{name} values must lie in [0, 2**32), got {i}")
        return i

    if isinstance(seed, (tuple, list, np.ndarray)):
        values = tuple(one(v) for v in (seed.tolist() if isinstance(seed, np.ndarray) else seed))
        if not values:
            raise ValueError(f"{name} must not be an empty sequence")
        return values
    return one(seed)


def _check_shape(shape: object) -> tuple[int, int]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise TypeError(f"shape must be a sequence (H, W), got {type(shape).__name__}")
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W) of the k-space grid, got {tuple(shape)}")
    dims = []
    for v in shape:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"shape must hold ints, got {tuple(shape)}")
        if v < 1:
            raise ValueError(f"shape must be positive, got {tuple(shape)}")
        dims.append(int(v))
    return dims[0], dims[1]


def _check_offset(offset: object) -> Union[int, None]:
    if offset is None:
        return None
    if isinstance(offset, bool) or not isinstance(offset, numbers.Integral):
        raise TypeError(f"offset must be an int or None, got {offset!r}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    return int(offset)


def _check_positive(value: object, name: str) -> float:
    if not _is_number(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------------
# shared pieces


@contextlib.contextmanager
def _temp_seed(rng: np.random.RandomState, seed: Union[Seed, None]) -> Iterator[None]:
    """fastMRI's temp_seed, plus: a call that raises leaves the state as it was."""
    state = rng.get_state()
    if seed is not None:
        rng.seed(seed)
    try:
        yield
    except BaseException:
        rng.set_state(state)
        raise
    if seed is not None:
        rng.set_state(state)


def _center_columns(width: int, num_low_frequencies: int) -> np.ndarray:
    """Bool [width]: the centre block of n columns starting at (W - n + 1) // 2 (contains W // 2)."""
    mask = np.zeros(width, dtype=bool)
    start = (width - num_low_frequencies + 1) // 2
    mask[start:start + num_low_frequencies] = True
    return mask


def _outer_spacing(width: int, num_low_frequencies: int, acceleration: float) -> float:
    """Spacing of a lattice over the full width that, with the centre block, samples W/R columns in
    total: R(n - W)/(nR - W) (fastMRI's EquispacedMaskFractionFunc; its exact float expression)."""
    return (acceleration * (num_low_frequencies - width)) / (
        num_low_frequencies * acceleration - width
    )


def _centred_square_side(mask: np.ndarray) -> int:
    """Side of the largest fully sampled centred square of a 2-D bool mask (see module docstring)."""
    height, width = mask.shape
    side = 0
    # the centred squares are nested, so the first one that is not full ends the search
    while side < min(height, width):
        s = side + 1
        top, left = (height - s + 1) // 2, (width - s + 1) // 2
        if not mask[top:top + s, left:left + s].all():
            break
        side = s
    return side


def _achieved_acceleration(mask: np.ndarray) -> float:
    taken = int(np.count_nonzero(mask))
    return mask.size / taken if taken else math.inf


class MaskFunc:
    """Base class: owns the random stream and turns `_sample` into `Mask`s.

    Subclasses implement `_sample(height, width, offset) -> (bool ndarray [W] or [H, W], acs)`,
    drawing only from `self.rng`.
    """

    def __init__(self, seed: Union[Seed, None] = None):
        self.rng = np.random.RandomState(_check_seed(seed, "seed"))

    def reseed(self, seed: Seed) -> None:
        """Restart the stream from `seed` (an int or a tuple of ints), e.g. per data-loader worker or
        DDP rank (fastMRI's worker_init_fn does `mask_func.rng.seed(...)`)."""
        checked = _check_seed(seed, "seed")
        if checked is None:
            raise ValueError("seed must be an int or a tuple of ints, got None")
        self.rng.seed(checked)

    def __call__(self, shape: Sequence[int], seed: Union[Seed, None] = None,
                 offset: Union[int, None] = None) -> Mask:
        """Sample a mask for a k-space grid of shape (H, W).

        seed: seeds the stream for this call only (the stream is restored afterwards).
        offset: first sampled index for the equispaced-type masks (equispaced, equispaced_fraction,
            magic, magic_fraction, equispaced_exact, uniform); drawn at random when None (uniform:
            0). The other masks ignore it, as fastMRI's random mask does.
        Returns a `Mask`: bool [W] (1-D) or [H, W] (2-D) on the CPU.
        """
        height, width = _check_shape(shape)
        seed = _check_seed(seed, "seed")
        offset = _check_offset(offset)
        with _temp_seed(self.rng, seed):
            mask, acs = self._sample(height, width, offset)
        return Mask(mask=torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)),
                    acceleration=_achieved_acceleration(mask), acs=int(acs))

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _choose(self, values: Sequence) -> object:
        # numpy's RandomState.choice(seq) is randint(0, len(seq)); fastMRI draws one even for one value
        return values[self.rng.randint(len(values))]


class _CenterAccelerationMaskFunc(MaskFunc):
    """Holds (center_fractions, accelerations) pairs and chooses one per call as fastMRI does."""

    _integer_accelerations = False

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float],
                 allow_any_combination: bool = False, seed: Union[Seed, None] = None):
        self.center_fractions = _check_center_fractions(center_fractions)
        self.accelerations = _check_accelerations(accelerations, self._integer_accelerations)
        if len(self.center_fractions) != len(self.accelerations) and not allow_any_combination:
            raise ValueError(
                f"center_fractions ({len(self.center_fractions)} values) and accelerations "
                f"({len(self.accelerations)} values) must have the same length unless "
                "allow_any_combination=True")
        self.allow_any_combination = bool(allow_any_combination)
        super().__init__(seed)

    def _choose_pair(self) -> tuple[float, Union[int, float]]:
        if self.allow_any_combination:
            center_fraction = self._choose(self.center_fractions)
            return center_fraction, self._choose(self.accelerations)
        i = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[i], self.accelerations[i]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(center_fractions={self.center_fractions}, "
                f"accelerations={self.accelerations}, "
                f"allow_any_combination={self.allow_any_combination})")


# --------------------------------------------------------------------------------------------------
# fastMRI 0.3.0


class _FastMRIMaskFunc(_CenterAccelerationMaskFunc):
    """fastMRI's MaskFunc.sample_mask: centre block OR a mask of the outer columns."""

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        center_fraction, acceleration = self._choose_pair()
        num_low_frequencies = round(width * center_fraction)
        outer = self._acceleration_columns(width, acceleration, offset, num_low_frequencies)
        return _center_columns(width, num_low_frequencies) | outer, num_low_frequencies

    def _acceleration_columns(self, width: int, acceleration: Union[int, float],
                              offset: Union[int, None], num_low_frequencies: int) -> np.ndarray:
        raise NotImplementedError


class RandomMaskFunc(_FastMRIMaskFunc):
    """fastMRI's RandomMaskFunc: the centre block of n = round(W * cf) columns, OR each column with
    probability (W/R - n)/(W - n) (one uniform draw per column), so W/R columns on average.

    center_fractions: one or more values in [0, 1); accelerations: values >= 1 (any real); one pair
    is chosen uniformly per call (any pair with allow_any_combination). seed: the stream's seed.
    Raises ValueError when the centre covers the whole width (fastMRI divides by zero).
    """

    def _acceleration_columns(self, width, acceleration, offset, num_low_frequencies):
        if num_low_frequencies == width:
            raise ValueError(f"center_fractions: the centre of round({width} * cf) = {width} columns "
                             f"covers the whole width; use a smaller centre fraction")
        prob = (width / acceleration - num_low_frequencies) / (width - num_low_frequencies)
        return self.rng.uniform(size=width) < prob


class EquiSpacedMaskFunc(_FastMRIMaskFunc):
    """fastMRI's EquiSpacedMaskFunc: the centre block OR columns offset, offset + R, ... with
    offset = randint(0, R) unless given. With a centre the achieved acceleration is below R (fastMRI
    documents this; see EquispacedMaskFractionFunc). Accelerations must be integers.
    """

    _integer_accelerations = True

    def _acceleration_columns(self, width, acceleration, offset, num_low_frequencies):
        if offset is None:
            offset = self.rng.randint(0, high=round(acceleration))
        mask = np.zeros(width, dtype=bool)
        mask[offset::acceleration] = True
        return mask


class EquispacedMaskFractionFunc(_FastMRIMaskFunc):
    """fastMRI's EquispacedMaskFractionFunc: the centre block OR columns round(arange(offset, W - 1,
    a)) with a = R(n - W)/(nR - W), offset = randint(0, round(a)) unless given: W/R columns in
    total. Raises ValueError when round(W * cf) * R >= W (fastMRI crashes or samples the centre only).
    """

    def _acceleration_columns(self, width, acceleration, offset, num_low_frequencies):
        if num_low_frequencies * acceleration >= width:
            raise ValueError(
                f"center_fractions/accelerations: the centre of {num_low_frequencies} columns "
                f"(of W = {width}) already reaches acceleration {acceleration}; the centre fraction "
                "must be below 1/acceleration")
        spacing = _outer_spacing(width, num_low_frequencies, acceleration)
        if offset is None:
            offset = self.rng.randint(0, high=round(spacing))
        mask = np.zeros(width, dtype=bool)
        # np.around (half to even) of the float lattice, as fastMRI
        mask[np.around(np.arange(offset, width - 1, spacing)).astype(np.int64)] = True
        return mask


def _magic_columns(rng: np.random.RandomState, width: int, acceleration: int,
                   offset: Union[int, None]) -> np.ndarray:
    """Defazio's offset sampling (fastMRI MagicMaskFunc.calculate_acceleration_mask): every R-th
    column on each side of DC, the two sides offset so that, by conjugate symmetry, they interleave."""
    if offset is None:
        offset = rng.randint(0, high=acceleration)
    if offset % 2 == 0:
        positive_start, negative_start = offset + 1, offset + 2
    else:
        positive_start, negative_start = offset + 2, offset - 1
    positive = np.zeros((width + 1) // 2, dtype=bool)   # DC and the positive frequencies
    negative = np.zeros(width - (width + 1) // 2, dtype=bool)  # the negative ones, from the highest
    positive[positive_start::acceleration] = True
    negative[negative_start::acceleration] = True
    uncentred = np.concatenate((positive, negative[::-1]))
    return np.fft.fftshift(uncentred)


class MagicMaskFunc(_FastMRIMaskFunc):
    """fastMRI's MagicMaskFunc (Defazio 2019, offset sampling exploiting conjugate symmetry): the
    centre block OR every R-th column on each side of DC with interleaving offsets; offset =
    randint(0, R) unless given. Like EquiSpacedMaskFunc it undershoots R with a centre. Accelerations
    must be integers.
    """

    _integer_accelerations = True

    def _acceleration_columns(self, width, acceleration, offset, num_low_frequencies):
        return _magic_columns(self.rng, width, acceleration, offset)


class MagicMaskFractionFunc(_FastMRIMaskFunc):
    """fastMRI's MagicMaskFractionFunc: n = round(W * cf) clamped to [1, round(W / R)]; the outer
    columns use the magic pattern with the integer acceleration round(W / (round(W / R) - n)), so the
    total is about W/R columns; acs is the clamped n. Raises ValueError where fastMRI crashes:
    round(W * cf) >= round(W / R) (cf >= 1/R) or round(W / R) <= 1.
    """

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        center_fraction, acceleration = self._choose_pair()
        num_low_frequencies = round(width * center_fraction)
        target_columns = round(width / acceleration)
        num_low_frequencies = max(min(num_low_frequencies, target_columns), 1)
        outer_columns = target_columns - num_low_frequencies
        if outer_columns <= 0:
            raise ValueError(
                f"center_fractions/accelerations: magic_fraction with W = {width}, cf = "
                f"{center_fraction}, acceleration = {acceleration} leaves no columns outside the "
                f"centre (round(W / R) = {target_columns}, centre {num_low_frequencies}); the centre "
                "fraction must be below 1/acceleration and W / acceleration at least 2")
        outer_acceleration = round(width / outer_columns)
        outer = _magic_columns(self.rng, width, outer_acceleration, offset)
        return _center_columns(width, num_low_frequencies) | outer, num_low_frequencies


# --------------------------------------------------------------------------------------------------
# 1-D masks of the papers


class _ExactMaskFunc(MaskFunc):
    """DUN-SA/SAN masks: exactly floor(W/R) columns, of which round(W * center_share / R) form the
    centre block (32% of the samples by default) and the rest lie outside it."""

    def __init__(self, accelerations: Sequence[float], center_share: float = 0.32,
                 seed: Union[Seed, None] = None):
        self.accelerations = _check_accelerations(accelerations)
        if not _is_number(center_share) or not 0 <= center_share <= 1:
            raise ValueError(f"center_share must be a number in [0, 1], got {center_share!r}")
        self.center_share = float(center_share)
        super().__init__(seed)

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        acceleration = self._choose(self.accelerations)
        total = math.floor(width / acceleration)
        if total < 1:
            raise ValueError(f"shape: width {width} is too small for acceleration {acceleration} "
                             "(floor(W / R) = 0 columns)")
        num_center = min(round(width * self.center_share / acceleration), total)
        center = _center_columns(width, num_center)
        outside = np.flatnonzero(~center)
        chosen = self._outer_indices(len(outside), total - num_center, offset)
        mask = center.copy()
        mask[outside[chosen]] = True
        return mask, num_center

    def _outer_indices(self, available: int, count: int, offset: Union[int, None]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(accelerations={self.accelerations}, "
                f"center_share={self.center_share})")


class RandomExactMaskFunc(_ExactMaskFunc):
    """DUN-SA/SAN random mask: exactly floor(W/R) columns; the centre block holds
    round(W * center_share / R) of them, the others are drawn uniformly without replacement from the
    remaining columns. accelerations: one chosen per call. Ignores offset.
    """

    def _outer_indices(self, available, count, offset):
        return self.rng.permutation(available)[:count]


class EquispacedExactMaskFunc(_ExactMaskFunc):
    """DUN-SA/SAN equispaced mask: exactly floor(W/R) columns; the centre block holds
    round(W * center_share / R) of them, the other m are equispaced over the remaining W - n columns
    (taken in order, skipping the centre): indices floor(offset + k s), s = (W - n)/m, k < m, with an
    integer offset in [0, ceil(s)) drawn at random unless given.
    """

    def _outer_indices(self, available, count, offset):
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        spacing = available / count
        limit = math.ceil(spacing)
        if offset is None:
            offset = self.rng.randint(0, limit)
        elif offset >= limit:
            raise ValueError(f"offset must be below ceil(spacing) = {limit} for this width and "
                             f"acceleration, got {offset}")
        indices = np.floor(offset + np.arange(count) * spacing).astype(np.int64)
        return np.minimum(indices, available - 1)


class UniformMaskFunc(_CenterAccelerationMaskFunc):
    """MANet's 1-D uniform mask: columns at regular spacing through DC, W//2 + offset + round(k a) for
    all integers k, OR a centre block of n = round(W * cf) columns. a = R without a centre, and
    R(W - n)/(W - nR) with one (the lattice outside the centre then carries W/R - n columns).
    Deterministic for a given (cf, R) and offset (default 0, DC sampled). center_fractions defaults to
    0 for every acceleration.
    """

    def __init__(self, accelerations: Sequence[float],
                 center_fractions: Union[Sequence[float], None] = None,
                 allow_any_combination: bool = False, seed: Union[Seed, None] = None):
        if center_fractions is None:
            center_fractions = [0.0] * len(_check_sequence(accelerations, "accelerations"))
        super().__init__(center_fractions, accelerations, allow_any_combination, seed)

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        center_fraction, acceleration = self._choose_pair()
        num_center = round(width * center_fraction)
        if num_center * acceleration >= width:
            raise ValueError(f"center_fractions: a centre of {num_center} columns (of W = {width}) "
                             f"already reaches acceleration {acceleration}")
        spacing = _outer_spacing(width, num_center, acceleration)
        reach = math.ceil(width / spacing) + 1
        k = np.arange(-reach, reach + 1)
        columns = width // 2 + (offset or 0) + np.rint(k * spacing).astype(np.int64)
        columns = columns[(columns >= 0) & (columns < width)]
        mask = _center_columns(width, num_center)
        mask[columns] = True
        return mask, num_center


# --------------------------------------------------------------------------------------------------
# 2-D masks


def _rasterise_spokes(height: int, width: int, angles: np.ndarray) -> np.ndarray:
    """Bool [H, W]: digital lines through DC at the given angles (radians from the W axis towards
    the H axis), one pixel per step along the line's major axis (rounded half to even)."""
    cy, cx = height // 2, width // 2
    mask = np.zeros((height, width), dtype=bool)
    cos, sin = np.cos(angles), np.sin(angles)
    along_w = np.abs(cos) >= np.abs(sin)
    if along_w.any():
        x = np.arange(width) - cx
        y = cy + np.rint(np.outer(sin[along_w] / cos[along_w], x)).astype(np.int64)
        xs = np.broadcast_to(x + cx, y.shape)
        keep = (y >= 0) & (y < height)
        mask[y[keep], xs[keep]] = True
    if (~along_w).any():
        y = np.arange(height) - cy
        x = cx + np.rint(np.outer(cos[~along_w] / sin[~along_w], y)).astype(np.int64)
        ys = np.broadcast_to(y + cy, x.shape)
        keep = (x >= 0) & (x < width)
        mask[ys[keep], x[keep]] = True
    return mask


def _spoke_angles(num_spokes: int, rotation: float) -> np.ndarray:
    return rotation + np.pi * np.arange(num_spokes) / num_spokes


def _closest(candidates: dict, target: float) -> object:
    """Key of `candidates` (key -> points sampled) whose acceleration total/points is nearest
    `target` in ratio; `target` is the wanted number of points."""
    return min(candidates, key=lambda key: abs(math.log(max(candidates[key], 1) / target)))


@lru_cache(maxsize=256)
def _radial_spoke_count(height: int, width: int, acceleration: float) -> int:
    """The number of spokes whose unrotated rasterisation samples closest to H*W/R points: bisection
    for the first count reaching the target (the count grows with the spokes, nearly monotonically),
    then the nearer of it and its predecessor."""
    target = height * width / acceleration
    points = {}

    def count(n: int) -> int:
        if n not in points:
            points[n] = int(_rasterise_spokes(height, width, _spoke_angles(n, 0.0)).sum())
        return points[n]

    # adjacent spokes are < 1 pixel apart at the corners beyond this many: the grid is full
    low, high = 1, math.ceil(math.pi * math.hypot(height, width) / 2) + 1
    if count(high) <= target:
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if count(middle) >= target:
            high = middle
        else:
            low = middle
    return _closest({n: count(n) for n in (low, high)}, target)


class RadialMaskFunc(MaskFunc):
    """2-D radial mask: N spokes (full lines through DC) at angles rotation + k pi / N, rasterised as
    digital lines (one pixel per step along the major axis), with N chosen so that H*W/R points are
    sampled as closely as whole spokes allow. accelerations: one chosen per call. rotation = 0 unless
    random_rotation, then uniform in [0, pi/N) per call (drawn from the stream). Ignores offset.
    """

    def __init__(self, accelerations: Sequence[float], random_rotation: bool = False,
                 seed: Union[Seed, None] = None):
        self.accelerations = _check_accelerations(accelerations)
        self.random_rotation = bool(random_rotation)
        super().__init__(seed)

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        acceleration = self._choose(self.accelerations)
        num_spokes = _radial_spoke_count(height, width, float(acceleration))
        rotation = self.rng.uniform(0.0, np.pi / num_spokes) if self.random_rotation else 0.0
        mask = _rasterise_spokes(height, width, _spoke_angles(num_spokes, rotation))
        return mask, _centred_square_side(mask)

    def __repr__(self) -> str:
        return (f"RadialMaskFunc(accelerations={self.accelerations}, "
                f"random_rotation={self.random_rotation})")


def _rasterise_spiral(height: int, width: int, turns: float, arms: int, exponent: float,
                      rotation: float) -> np.ndarray:
    """Bool [H, W]: `arms` interleaved spirals r = t^exponent, angle = 2 pi turns t + rotation +
    2 pi j / arms (t in [0, 1]), scaled so r = 1 reaches the grid's corners, sampled at most 0.5 pixel
    apart and rounded to the grid."""
    cy, cx = height // 2, width // 2
    # an ellipse through the corners: (H/2)^2 / radius_y^2 + (W/2)^2 / radius_x^2 = 1
    radius_y, radius_x = height / math.sqrt(2), width / math.sqrt(2)
    radius = max(radius_y, radius_x)
    # with exponent >= 1, |dk/dt| <= radius * (exponent + 2 pi turns) (its value at t = 1)
    steps = int(math.ceil(2 * radius * (exponent + 2 * math.pi * turns))) + 2
    mask = np.zeros((height, width), dtype=bool)
    chunk = 1 << 20  # bounds the temporaries of dense spirals
    for begin in range(0, steps, chunk):
        t = np.arange(begin, min(begin + chunk, steps)) / (steps - 1)
        r = t ** exponent
        for arm in range(arms):
            angle = 2 * math.pi * (turns * t + arm / arms) + rotation
            y = cy + np.rint(radius_y * r * np.sin(angle)).astype(np.int64)
            x = cx + np.rint(radius_x * r * np.cos(angle)).astype(np.int64)
            keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            mask[y[keep], x[keep]] = True
    return mask


@lru_cache(maxsize=256)
def _spiral_turns(height: int, width: int, acceleration: float, arms: int, exponent: float) -> float:
    """Turns per arm whose unrotated spiral samples closest to H*W/R points (bisection on the
    turns; the count grows with them, nearly monotonically)."""
    target = height * width / acceleration
    points = {}

    def count(turns: float) -> int:
        if turns not in points:
            points[turns] = int(_rasterise_spiral(height, width, turns, arms, exponent, 0.0).sum())
        return points[turns]

    # bracket the target, starting from the turns whose path length, 2 pi radius turns arms /
    # (exponent + 1) pixels, equals it; then bisect
    radius = max(height, width) / math.sqrt(2)
    estimate = target * (exponent + 1) / (2 * math.pi * radius * arms)
    # at the rim successive turns are exponent * radius / (turns * arms) pixels apart, half a pixel
    # at `most` (and less further in): the grid is then as full as the spiral can make it
    most = 2.0 * exponent * radius / arms
    if count(estimate) >= target:
        low, high = estimate / 2, estimate
        while count(low) >= target and low > 1e-3:
            low, high = low / 2, low
    else:
        low, high = estimate, min(2 * estimate, most)
        while count(high) < target:
            if high >= most:
                return high
            low, high = high, min(2 * high, most)
    for _ in range(40):
        if abs(count(high) - target) <= 0.002 * target:
            break
        middle = (low + high) / 2
        if count(middle) >= target:
            high = middle
        else:
            low = middle
    return _closest({t: count(t) for t in (low, high)}, target)


class SpiralMaskFunc(MaskFunc):
    """2-D variable-density spiral: `arms` interleaved arms r = t^exponent (t in [0, 1], r = 1 at the
    grid corners, so exponent > 1 samples the centre more densely), rasterised on the grid, with the
    number of turns chosen (bisection) so that about H*W/R points are sampled. accelerations: one
    chosen per call. rotation = 0 unless random_rotation, then uniform in [0, 2 pi / arms) per call.
    Ignores offset.
    """

    def __init__(self, accelerations: Sequence[float], arms: int = 1, exponent: float = 2.0,
                 random_rotation: bool = False, seed: Union[Seed, None] = None):
        self.accelerations = _check_accelerations(accelerations)
        if isinstance(arms, bool) or not isinstance(arms, numbers.Integral) or arms < 1:
            raise ValueError(f"arms must be a positive int, got {arms!r}")
        self.arms = int(arms)
        if not _is_number(exponent) or not 1 <= exponent <= 8:
            raise ValueError(f"exponent must be a number in [1, 8], got {exponent!r}")
        self.exponent = float(exponent)
        self.random_rotation = bool(random_rotation)
        super().__init__(seed)

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        acceleration = self._choose(self.accelerations)
        turns = _spiral_turns(height, width, float(acceleration), self.arms, self.exponent)
        rotation = (self.rng.uniform(0.0, 2 * np.pi / self.arms) if self.random_rotation else 0.0)
        mask = _rasterise_spiral(height, width, turns, self.arms, self.exponent, rotation)
        return mask, _centred_square_side(mask)

    def __repr__(self) -> str:
        return (f"SpiralMaskFunc(accelerations={self.accelerations}, arms={self.arms}, "
                f"exponent={self.exponent}, random_rotation={self.random_rotation})")


class GaussianMaskFunc(_CenterAccelerationMaskFunc):
    """2-D random mask with Gaussian density about DC: a fully sampled centre square of side
    n = round(min(H, W) * cf) (placed by fastMRI's centre rule), and exactly round(H*W/R) - n^2 more
    points drawn without replacement outside it with weights exp(-((ky/(sigma H))^2 +
    (kx/(sigma W))^2)/2), ky, kx the offsets from DC (Efraimidis-Spirakis keys: exponential draws
    divided by the weights, smallest first). center_fractions defaults to 0.08 for every
    acceleration. Ignores offset.
    """

    def __init__(self, accelerations: Sequence[float],
                 center_fractions: Union[Sequence[float], None] = None,
                 allow_any_combination: bool = False, sigma: float = 0.25,
                 seed: Union[Seed, None] = None):
        if center_fractions is None:
            center_fractions = [0.08] * len(_check_sequence(accelerations, "accelerations"))
        self.sigma = _check_positive(sigma, "sigma")
        super().__init__(center_fractions, accelerations, allow_any_combination, seed)

    def _sample(self, height: int, width: int, offset: Union[int, None]) -> tuple[np.ndarray, int]:
        center_fraction, acceleration = self._choose_pair()
        side = round(min(height, width) * center_fraction)
        total = round(height * width / acceleration)
        if side * side > total:
            raise ValueError(f"center_fractions: a centre square of side {side} ({side * side} points)"
                             f" exceeds the {total} points of acceleration {acceleration} on "
                             f"{height}x{width}")
        mask = np.zeros((height, width), dtype=bool)
        top, left = (height - side + 1) // 2, (width - side + 1) // 2
        mask[top:top + side, left:left + side] = True
        outside = np.flatnonzero(~mask.ravel())
        ky = outside // width - height // 2
        kx = outside % width - width // 2
        log_weight = -0.5 * ((ky / (self.sigma * height)) ** 2 + (kx / (self.sigma * width)) ** 2)
        keys = np.log(self.rng.standard_exponential(len(outside))) - log_weight
        count = total - side * side
        if count > 0:
            chosen = np.argpartition(keys, count - 1)[:count]
            mask.ravel()[outside[chosen]] = True
        return mask, _centred_square_side(mask)

    def __repr__(self) -> str:
        return (f"GaussianMaskFunc(accelerations={self.accelerations}, "
                f"center_fractions={self.center_fractions}, sigma={self.sigma}, "
                f"allow_any_combination={self.allow_any_combination})")


# --------------------------------------------------------------------------------------------------
# factory

_MASK_CLASSES: dict[str, type] = {
    "random": RandomMaskFunc,
    "equispaced": EquiSpacedMaskFunc,
    "equispaced_fraction": EquispacedMaskFractionFunc,
    "magic": MagicMaskFunc,
    "magic_fraction": MagicMaskFractionFunc,
    "random_exact": RandomExactMaskFunc,
    "equispaced_exact": EquispacedExactMaskFunc,
    "uniform": UniformMaskFunc,
    "radial": RadialMaskFunc,
    "spiral": SpiralMaskFunc,
    "gaussian": GaussianMaskFunc,
}

MASK_NAMES: tuple[str, ...] = tuple(_MASK_CLASSES)


def default_mask_kwargs(name: str) -> dict:
    """The arguments a run gives mask `name` unless told otherwise: 4× acceleration, and the fastMRI centre
    fraction 0.08 for the masks that take one (the 2-D radial, spiral and Gaussian masks do not)."""
    if name not in _MASK_CLASSES:
        raise ValueError(f"name must be one of {MASK_NAMES}, got {name!r}")
    takes_centre = "center_fractions" in inspect.signature(_MASK_CLASSES[name].__init__).parameters
    return {"center_fractions": [0.08], "accelerations": [4]} if takes_centre else {"accelerations": [4]}


def mask_func(name: str, **kwargs) -> MaskFunc:
    """The mask function called `name` (one of MASK_NAMES), built with the class's constructor
    arguments, e.g. mask_func("random", center_fractions=[0.08], accelerations=[4], seed=0) or
    mask_func("radial", accelerations=[4])."""
    if name not in _MASK_CLASSES:
        raise ValueError(f"name must be one of {MASK_NAMES}, got {name!r}")
    return _MASK_CLASSES[name](**kwargs)

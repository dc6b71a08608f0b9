"""What the converters of the authors' checkpoints share (`fsmnet.from_authors_state_dict`,
`manet.from_authors_state_dict`): the state dict out of the file's container, without DataParallel's
prefix."""
from __future__ import annotations

from collections.abc import Mapping


def authors_state_dict(state_dict: object, container: str) -> Mapping:
    """state_dict itself, or state_dict[container] where the authors' training script wraps it so (FSMNet's
    {"network": ...}, a Lightning checkpoint's {"state_dict": ...}), with the "module." prefix of every key
    removed where all have it (DataParallel). TypeError for something that is not a mapping."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    if container in state_dict and isinstance(state_dict[container], Mapping):
        state_dict = state_dict[container]
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict

"""Batches for training: random access into the store's memory-mapped level, no decoding.

Images stay uint8 until they reach the model's device; `to_model_range` converts them there.
Each epoch is a fresh permutation of the data set. With several ranks, every rank draws the same
global minibatch from that permutation and reads only its own contiguous slice of it: the ranks'
shards are disjoint within an epoch, and N ranks x B/N images see exactly the images that one
rank x B would, which keeps runs comparable and resumable across different rank counts.
"""

from __future__ import annotations

import numpy as np
import torch

from progan.data.store import Store


class BatchLoader:
    """Draws minibatches at any level of a store.

    The permutation and mirror flips come from one NumPy generator seeded by `seed`, and its
    state round-trips through `state_dict`, so a resumed run reads the same batches as an
    uninterrupted one.
    """

    def __init__(
        self, store: Store, seed: int = 0, mirror: bool = False, rank: int = 0, world_size: int = 1
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.rank = rank
        self.world_size = world_size
        self.rng = np.random.default_rng(seed)
        self._levels: dict[int, np.ndarray] = {}
        labels = store.labels
        self._labels = None if labels is None else torch.from_numpy(np.array(labels, dtype=np.float32))
        self._order = np.empty(0, dtype=np.int64)
        self._pos = 0

    def _level(self, resolution: int) -> np.ndarray:
        if resolution not in self._levels:
            self._levels[resolution] = self.store.images(resolution)
        return self._levels[resolution]

    def _next_indices(self, batch_size: int) -> np.ndarray:
        out = []
        need = batch_size
        while need > 0:
            if self._pos >= len(self._order):
                self._order = self.rng.permutation(self.store.count)
                self._pos = 0
            take = self._order[self._pos : self._pos + need]
            self._pos += len(take)
            need -= len(take)
            out.append(take)
        return np.concatenate(out)

    def next(self, resolution: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's share of a global minibatch of `batch_size` images: (uint8 images
        (B / world_size, C, r, r), float labels (B / world_size, L) or None), on the CPU."""
        if batch_size % self.world_size:
            raise ValueError(f"minibatch {batch_size} does not split evenly over {self.world_size} ranks")
        idx = self._next_indices(batch_size)
        flip = self.rng.random(batch_size) < 0.5 if self.mirror else None
        local = slice(
            self.rank * batch_size // self.world_size, (self.rank + 1) * batch_size // self.world_size
        )
        idx = idx[local]
        images = self._level(resolution)[idx]  # fancy indexing: a private, writable copy
        if flip is not None:
            flip = flip[local]
            images[flip] = images[flip, :, :, ::-1]
        images_t = torch.from_numpy(images)
        labels_t = None if self._labels is None else self._labels[torch.from_numpy(idx)]
        return images_t, labels_t

    def state_dict(self) -> dict:
        """The whole state as plain Python (JSON-able; the order as a list)."""
        return {**self.state_json(), "order": self._order.tolist()}

    def load_state_dict(self, state: dict) -> None:
        order = state["order"]
        self.load_state(state, {"order": torch.as_tensor(np.asarray(order, dtype=np.int64))})

    # A snapshot stores the state split in two: the small JSON part (generator state, position)
    # in state.json and the epoch's permutation, which grows with the data set, as a tensor.

    def state_json(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "pos": self._pos}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"order": torch.from_numpy(self._order.astype(np.int64, copy=True))}

    def load_state(self, json_part: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.rng.bit_generator.state = json_part["rng"]
        self._order = np.asarray(tensors["order"].numpy(), dtype=np.int64).copy()
        self._pos = int(json_part["pos"])


def to_model_range(images: torch.Tensor, device: torch.device | str, dtype=torch.float32) -> torch.Tensor:
    """uint8 [0, 255] on the CPU -> float [-1, 1] on `device`; the copy travels as uint8."""
    x = images.to(device, non_blocking=True)
    return x.to(dtype) * (2.0 / 255.0) - 1.0

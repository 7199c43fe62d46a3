import numpy as np
import torch

from progan.data.loader import BatchLoader, to_model_range
from progan.data.store import write_store


def numbered_store(tmp_path, n=20):
    """Image i is filled with value i (and its label row is one-hot i % 4): contents identify images."""
    images = np.zeros((n, 1, 8, 8), dtype=np.uint8)
    images[:, 0, :, :4] = np.arange(n)[:, None, None]
    images[:, 0, :, 4:] = 200
    labels = np.eye(4, dtype=np.float32)[np.arange(n) % 4]
    return write_store(tmp_path / "s", images, labels=labels)


def ids(batch):
    # An unflipped image has its id in the left half; a mirrored one in the right half.
    return [int(min(img[0, 0, 0], img[0, 0, 7])) for img in batch]


def test_epoch_covers_every_image_once(tmp_path):
    store = numbered_store(tmp_path)
    loader = BatchLoader(store, seed=1)
    images, labels = loader.next(8, 20)
    assert sorted(ids(images)) == list(range(20))
    assert all(labels[i, ids(images)[i] % 4] == 1 for i in range(20))
    assert images.dtype == torch.uint8 and images.shape == (20, 1, 8, 8)


def test_ranks_get_disjoint_slices_of_the_global_batch(tmp_path):
    store = numbered_store(tmp_path)
    single = BatchLoader(store, seed=3, mirror=True)
    ranks = [BatchLoader(store, seed=3, mirror=True, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):  # crosses an epoch boundary: 12 + 12 + 12 images of 20
        whole, labels = single.next(8, 12)
        parts = [loader.next(8, 12) for loader in ranks]
        assert parts[0][0].shape[0] == 6
        assert torch.equal(torch.cat([p[0] for p in parts]), whole)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)
    first_epoch = [BatchLoader(store, seed=4, rank=r, world_size=2).next(8, 20)[0] for r in (0, 1)]
    assert sorted(ids(first_epoch[0]) + ids(first_epoch[1])) == list(range(20))


def test_mirror_flips_some_images_exactly(tmp_path):
    store = numbered_store(tmp_path)
    images, _ = BatchLoader(store, seed=0, mirror=True).next(8, 20)
    flipped = [bool(img[0, 0, 0] == 200) for img in images]
    assert 0 < sum(flipped) < 20
    for img, f in zip(images, flipped, strict=True):
        unflipped = img.flip(-1) if f else img
        assert torch.all(unflipped[0, :, 4:] == 200) and torch.all(unflipped[0, :, :4] == unflipped[0, 0, 0])


def test_lower_levels_and_state_round_trip(tmp_path):
    store = numbered_store(tmp_path)
    loader = BatchLoader(store, seed=5, mirror=True)
    loader.next(4, 7)
    state = loader.state_dict()
    expected = loader.next(8, 13)[0]
    other = BatchLoader(store, seed=99, mirror=True)
    other.load_state_dict(state)
    assert torch.equal(other.next(8, 13)[0], expected)
    assert loader.next(4, 3)[0].shape == (3, 1, 4, 4)


def test_to_model_range():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).reshape(1, 3, 1, 1)
    y = to_model_range(x, "cpu")
    torch.testing.assert_close(y.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))

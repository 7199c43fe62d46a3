"""The published pretrained ProGAN files that `progan import` recognizes.

The official files (Google Drive folder `networks/tensorflow-version` of
tkarras/progressive_growing_of_gans, CC BY-NC 4.0) have no published checksums; they are
recognized by name and structure. The GAN zoo's torch hub files carry the first 8 hex digits of
their SHA-256 in their names (torch.hub's check_hash convention), which is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

# The paper's LSUN networks (section 6.3 and its appendix): 256x256, one network per category.
LSUN_CATEGORIES = (
    "airplane bedroom bicycle bird boat bottle bridge bus car cat chair churchoutdoor classroom "
    "conferenceroom cow diningroom diningtable dog horse kitchen livingroom motorbike person "
    "pottedplant restaurant sheep sofa tower train tvmonitor"
).split()


@dataclass(frozen=True)
class KnownFile:
    name: str
    origin: str  # "official" or "ganzoo"
    dataset: str
    resolution: int
    channels: int = 3
    label_size: int = 0
    sha256_prefix: str = ""  # published part of the SHA-256, when any
    licence: str = ""
    url: str = ""


OFFICIAL_LICENCE = "CC BY-NC 4.0 (NVIDIA)"
GANZOO_LICENCE = "BSD-3-Clause (pytorch_GAN_zoo)"
OFFICIAL_FOLDER = "https://drive.google.com/drive/folders/15hvzxt_XxuokSmj0uO4xxMTMWVc0cIMU"
ZOO = "https://dl.fbaipublicfiles.com/gan_zoo/PGAN/"

KNOWN: dict[str, KnownFile] = {
    "karras2018iclr-celebahq-1024x1024.pkl": KnownFile(
        "karras2018iclr-celebahq-1024x1024.pkl", "official", "CelebA-HQ", 1024, licence=OFFICIAL_LICENCE,
        url=OFFICIAL_FOLDER,
    ),
    **{
        f"karras2018iclr-lsun-{c}-256x256.pkl": KnownFile(
            f"karras2018iclr-lsun-{c}-256x256.pkl", "official", f"LSUN {c}", 256, licence=OFFICIAL_LICENCE,
            url=OFFICIAL_FOLDER,
        )
        for c in LSUN_CATEGORIES
    },
    "celebaHQ_s6_i80000-6196db68.pth": KnownFile(
        "celebaHQ_s6_i80000-6196db68.pth", "ganzoo", "CelebA-HQ (hub name celebAHQ-256)", 256,
        sha256_prefix="6196db68", licence=GANZOO_LICENCE, url=ZOO + "celebaHQ_s6_i80000-6196db68.pth",
    ),
    "celebaHQ16_december_s7_i96000-9c72988c.pth": KnownFile(
        "celebaHQ16_december_s7_i96000-9c72988c.pth", "ganzoo", "CelebA-HQ (hub name celebAHQ-512)", 512,
        sha256_prefix="9c72988c", licence=GANZOO_LICENCE,
        url=ZOO + "celebaHQ16_december_s7_i96000-9c72988c.pth",
    ),
    "celebaCropped_s5_i83000-2b0acc76.pth": KnownFile(
        "celebaCropped_s5_i83000-2b0acc76.pth", "ganzoo", "CelebA cropped (hub name celeba)", 128,
        sha256_prefix="2b0acc76", licence=GANZOO_LICENCE, url=ZOO + "celebaCropped_s5_i83000-2b0acc76.pth",
    ),
    "testDTD_s5_i96000-04efa39f.pth": KnownFile(
        "testDTD_s5_i96000-04efa39f.pth", "ganzoo", "DTD textures (hub name DTD)", 128,
        sha256_prefix="04efa39f", licence=GANZOO_LICENCE, url=ZOO + "testDTD_s5_i96000-04efa39f.pth",
    ),
}  # fmt: skip


def lookup(filename: str) -> KnownFile | None:
    return KNOWN.get(filename)


def check(
    known: KnownFile, origin: str, resolution: int, channels: int, label_size: int, sha256: str
) -> list[str]:
    """Reasons why a file named like a known one is not it (empty when it matches)."""
    problems = []
    if origin != known.origin:
        problems.append(f"it is a {origin} file, {known.name} is a {known.origin} one")
    if (resolution, channels, label_size) != (known.resolution, known.channels, known.label_size):
        problems.append(
            f"it is {resolution}x{resolution}x{channels} with {label_size} labels, {known.name} is "
            f"{known.resolution}x{known.resolution}x{known.channels} with {known.label_size}"
        )
    if known.sha256_prefix and not sha256.startswith(known.sha256_prefix):
        problems.append(f"its SHA-256 {sha256[:8]}... differs from the published {known.sha256_prefix}...")
    return problems

"""Published accuracies, as data with their source, and which benchmark a protocol evaluates.

These numbers were not measured by this harness: they come from papers, with other episodes, other
backbones and the papers' own evaluation habits (unseeded episodes, best-of-several test evaluations; see
METHODS.md section 6). The leaderboard shows them apart from measured results, only beside protocols of the
same dataset, split, way and shot, and never ranks them against measured numbers.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Reported:
    method: str
    #: "hmdb51", "ucf101", "ssv2" or "kinetics"
    dataset: str
    #: the few-shot split ("arn", "cmn", "otam"); None where the source does not say
    split: str | None
    way: int
    shot: int
    accuracy: float
    source: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


MASTAF = "MASTAF (Liu et al., WACV 2023; arXiv 2112.04585 'STAF'), abstract"
STRM = "STRM (Thatipelli et al., CVPR 2022), Table 1"
_STAF_SPLIT = "split not stated in the abstract (the reference code has folders for SSv2's CMN and OTAM splits)"

REPORTED: tuple[Reported, ...] = (
    Reported("STAF", "ucf101", None, 5, 1, 91.6, MASTAF, "split not stated in the abstract"),
    Reported("STAF", "hmdb51", None, 5, 1, 69.5, MASTAF, "split not stated in the abstract"),
    Reported("STAF", "ssv2", None, 5, 1, 60.7, MASTAF, _STAF_SPLIT),
    Reported("CMN-J", "kinetics", "cmn", 5, 5, 78.9, STRM),
    Reported("ARN", "kinetics", "cmn", 5, 5, 82.4, STRM),
    Reported("ARN", "hmdb51", "arn", 5, 5, 60.6, STRM),
    Reported("ARN", "ucf101", "arn", 5, 5, 83.1, STRM),
    Reported("OTAM", "kinetics", "cmn", 5, 5, 85.8, STRM),
    Reported("OTAM", "ssv2", "otam", 5, 5, 52.3, STRM),
    Reported("TRX", "kinetics", "cmn", 5, 5, 85.9, STRM),
    Reported("TRX", "ssv2", "otam", 5, 5, 64.6, STRM),
    Reported("TRX", "hmdb51", "arn", 5, 5, 75.6, STRM),
    Reported("TRX", "ucf101", "arn", 5, 5, 96.1, STRM),
)

# dataset names as protocols may spell them (letters and digits only, lower case) -> the benchmark's dataset
_DATASETS = {
    "hmdb51": "hmdb51", "hmdb": "hmdb51",
    "ucf101": "ucf101", "ucf": "ucf101",
    "ssv2": "ssv2", "smsm": "ssv2", "sthsthv2": "ssv2", "somethingsomethingv2": "ssv2", "somethingsomething": "ssv2", "somethingv2": "ssv2",
    "kinetics": "kinetics", "kinetics100": "kinetics", "kinetics400": "kinetics",
}
# the only few-shot split of these datasets in splits/ (see ../shared/splits/README.md)
_ONLY_SPLIT = {"hmdb51": "arn", "ucf101": "arn", "kinetics": "cmn"}


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def dataset_of(protocol_name: str, dataset_name: str = "") -> str | None:
    """The benchmark dataset a protocol evaluates, from its dataset name, else from its own name
    ("hmdb-arn-5w5s" -> "hmdb51"); None for anything else (the synthetic benchmark, say)."""
    squashed = re.sub(r"[^a-z0-9]", "", dataset_name.lower())
    if squashed in _DATASETS:
        return _DATASETS[squashed]
    for token in _tokens(dataset_name) + _tokens(protocol_name):
        if token in _DATASETS:
            return _DATASETS[token]
    return None


def split_of(dataset: str, protocol_name: str, dataset_name: str = "", split_files: tuple[str, ...] = ()) -> str | None:
    """The few-shot split: named in the protocol or dataset name ("ssv2-otam-5w5s"), implied by the dataset
    (HMDB51 and UCF101 have ARN, Kinetics CMN), or for SSv2 by the split files (TRX's 07 files are OTAM's,
    its 03 files CMN's)."""
    words = set(_tokens(protocol_name) + _tokens(dataset_name))
    for split in ("otam", "cmn", "arn"):
        if split in words:
            return split
    if dataset in _ONLY_SPLIT:
        return _ONLY_SPLIT[dataset]
    if dataset == "ssv2":
        numbers = {m for f in split_files for m in re.findall(r"(\d\d)\.txt$", f)}
        if numbers == {"07"}:
            return "otam"
        if numbers == {"03"}:
            return "cmn"
    return None


def reported_for(protocol_name: str, content: dict | None) -> list[Reported]:
    """Published numbers comparable in kind with a protocol: same dataset, way and shot, and the same split
    where the source names one. `content` is the protocol's resolved content (summary['protocol_content'])."""
    content = content or {}
    ds = content.get("dataset", {}) or {}
    dataset = dataset_of(protocol_name, ds.get("name", ""))
    if dataset is None or ds.get("part", "test") != "test":
        return []
    splits = ds.get("splits", {}) or {}
    split = split_of(dataset, protocol_name, ds.get("name", ""), tuple(str(v) for v in splits.values()))
    way, shot = content.get("way"), content.get("shot")
    return [r for r in REPORTED if r.dataset == dataset and r.way == way and r.shot == shot and (r.split is None or r.split == split)]

"""The road from a protocol to results: dataset -> index -> backbone -> features -> head -> records -> summary."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import scipy
import torch

import harness
import harness.packages  # noqa: F401  (the harness's own methods/, whatever sys.path holds)
import methods
from harness import distributed
from harness.backbones import create_backbone, load_weights, sha256_file
from harness.checkpoints import checkpoint_dir, load_checkpoint
from harness.console import log, progress_bar, warn
from harness.data import synthetic
from harness.data.index import VideoIndex, build_index
from harness.episodes import EpisodeSet
from harness.errors import HarnessError
from harness.evaluate import embed_pool, evaluate
from harness.features import DEVICE_PIXELS, FeatureStore
from harness.locks import file_lock
from harness.phases import phase
from harness.pretrain import PRETRAIN_DEFAULTS, pretrain, pretrained_path
from harness.protocol import Protocol, canonical_json, dataset_root, protocol_origin, resolve_path, split_dir
from harness.provenance import code_record, environment, torchvision_version
from harness.data.fingerprint import checked_once, index_fingerprint
from harness.results import RunFolder
from harness.stats import accuracy_summary
from harness.uncertainty import level_intervals

#: backbones the harness trains itself (no published weights)
SELF_TRAINED = ("tiny3d",)


@dataclass
class Settings:
    """Where things live and what runs them; passed in, never global."""

    home: Path
    results: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    workers: int = 0
    extract_batch: int = 16
    batch_episodes: int = 1000
    show_progress: bool | None = None
    #: backbone arithmetic for feature extraction: "fp32", or "bf16" (mixed precision; its own cache key)
    precision: str = "fp32"
    #: where JPEG frames are decoded and clips resized: "auto" (on the GPU when the backbone runs on one, with a
    #: feature-store key of its own: harness.features.PIXELS) or "cpu" (in the loader, as on a CPU-only machine)
    decode: str = "auto"
    #: score episodes again even when the results of the very same run are on disk
    recompute: bool = False


def remove_stale_temporaries(*folders: Path, prefix: str = ".") -> int:
    """Delete the temporary files (`.<name>.<random>.tmp`, see harness.files) left in `folders` by a writer that
    was killed between writing and renaming; return how many. Readers never open them, so they are only debris.
    Call it only while holding the lock that every writer of those files holds: then none of them is being
    written, and each one is a dead writer's."""
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:  # no such folder yet
            continue
        for entry in entries:
            if entry.name.startswith(prefix) and entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
    return removed


def subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError("--device cuda was asked for, but PyTorch sees no CUDA device", fix="use --device cpu, or install a CUDA build of PyTorch on a machine with a GPU")
    return torch.device(name)


def generate_synthetic(root: Path, spec: "synthetic.SyntheticSpec", show_progress: bool | None = None, workers: int = 2) -> Path:
    total = (spec.n_train + spec.n_val + spec.n_test) * spec.videos_per_class
    log(f"generating the synthetic benchmark in {root} ({total} videos)")
    with progress_bar("synthetic videos", total, show_progress, unit="videos") as advance:
        last = [0]

        def report(done: int, _total: int) -> None:  # the generator counts up; the bar wants steps
            advance(done - last[0])
            last[0] = done

        try:
            with file_lock(root.parent / f".{root.name}.lock", what=f"generating {root}"), phase("generating the synthetic videos"):  # the second finds it done
                return synthetic.generate(root, spec, progress=report, workers=workers)
        except ValueError as e:  # a folder that holds something else, or another spec
            raise HarnessError(str(e)) from None


def ensure_dataset(p: Protocol, s: Settings) -> Path:
    """The data root; the embedded synthetic benchmark is generated there when it is missing."""
    root = dataset_root(p, s.home)
    # a finished synthetic dataset of any size is used as it is (tests and `bench.py synth` make others)
    if p.dataset.name == "synthetic" and not (root / synthetic.METADATA_NAME).is_file():
        generate_synthetic(root, synthetic.SyntheticSpec(), s.show_progress, workers=max(1, min(2, os.cpu_count() or 1)))
    return root


#: while `one_index_per_split()` is active: the indexes read so far, by what decides them
_indexes: dict | None = None


@contextlib.contextmanager
def one_index_per_split() -> Iterator[None]:
    """Within the block each split is indexed once, its content fingerprinted once: the quickstart's steps read
    the same three splits 29 times (0.2 s each, stat of every frame), and nothing edits the data between them.
    Outside it, every command indexes afresh, so a video edited between two commands is always seen."""
    global _indexes
    outer, _indexes = _indexes, ({} if _indexes is None else _indexes)
    try:
        with checked_once():  # and each video's files are checked once for its fingerprint
            yield
    finally:
        _indexes = outer


def load_index(p: Protocol, s: Settings, part: str) -> VideoIndex:
    root = ensure_dataset(p, s)
    files = {"train": p.dataset.splits.train, "val": p.dataset.splits.val, "test": p.dataset.splits.test}
    split_file = split_dir(p, s.home) / files[part]
    key = (str(root), str(split_file), part, p.frames.count, p.dataset.bad_videos, str(s.home))
    if _indexes is not None and key in _indexes:
        return _indexes[key]
    index = build_index(root, split_file, part, p.frames.count, p.dataset.bad_videos, video_checks=s.home / "video-checks")
    if _indexes is not None:
        _indexes[key] = index
    if index.excluded:
        warn(f"{len(index.excluded)} videos of the {part} split are excluded (dataset.bad_videos: exclude); they are listed in the results")
    if index.renamed:
        warn(f"{len(index.renamed)} videos of the {part} split were found under another name (case, '_' for spaces, or a bare Kinetics id); they are listed in the results")
    if index.linked:
        n = sum(link["videos"] for link in index.linked)
        warn(f"{n} videos of the {part} split are read through symbolic links that leave the data root (e.g. {index.linked[0]['link']} -> "
             f"{index.linked[0]['target']}); they are listed in the results")
    return index


def backbone_for(p: Protocol, s: Settings, pretrain_if_missing: bool = False, before_pretraining: Callable[[], None] | None = None) -> tuple[torch.nn.Module, str, str]:
    """(backbone module with its weights, weights SHA-256, weights file). `before_pretraining` is called before
    a pretraining starts (a check that should fail before minutes of work rather than after)."""
    model = create_backbone(p.backbone.name)
    if p.backbone.weights:
        path = resolve_path(p.backbone.weights, s.home)
    elif p.backbone.name in SELF_TRAINED:
        train_index = load_index(p, s, "train")
        path = pretrained_path(s.home, p.backbone.name, p.dataset.name, train_index, p.frames, PRETRAIN_DEFAULTS)
        if not path.is_file():
            # one process pretrains; another waits here, then finds the weights file
            with file_lock(path.with_name(f".{path.name}.lock"), what=f"pretraining backbone '{p.backbone.name}'"):
                remove_stale_temporaries(path.parent, prefix=f".{path.name}.")  # a killed pretraining's half-written file
                if not path.is_file():
                    if not pretrain_if_missing:
                        raise HarnessError(
                            f"backbone '{p.backbone.name}' has not been pretrained for this dataset yet",
                            where=p.where("backbone.weights"),
                            fix=f"run `fsv-bench pretrain --protocol {p.source}` (the quickstart does it on its own)",
                        )
                    if before_pretraining:
                        before_pretraining()
                    log(f"pretraining backbone '{p.backbone.name}' on the {len(train_index.classes)} train classes ({len(train_index)} videos)")
                    started = time.perf_counter()
                    steps = PRETRAIN_DEFAULTS["epochs"] * -(-len(train_index) // PRETRAIN_DEFAULTS["batch_size"])
                    with progress_bar("pretraining", steps, s.show_progress, unit="steps") as advance, phase("pretraining the backbone"):
                        with torch.random.fork_rng():  # the initial weights too come from the pretraining seed
                            torch.manual_seed(PRETRAIN_DEFAULTS["seed"])
                            fresh = create_backbone(p.backbone.name)
                            pretrain(fresh, train_index, p.frames, path, workers=s.workers, log=log, progress=lambda *_: advance(1))
                    log(f"pretrained in {time.perf_counter() - started:.0f} s -> {path}")
    else:
        raise HarnessError(f"backbone '{p.backbone.name}' needs a weights file", where=p.where("backbone.weights"), fix="set backbone.weights to the file you downloaded (the harness never downloads weights)")
    sha = load_weights(model, path, p.backbone.name, ignore=getattr(model, "ignore_weights", ()))
    return model.eval(), sha, str(path)


def pixels_for(s: Settings) -> str:
    """How the feature store makes pixels under these settings (harness.features.PIXELS)."""
    return DEVICE_PIXELS if s.decode == "auto" and s.device.type == "cuda" else "cpu"


def features_for(p: Protocol, s: Settings, index: VideoIndex, backbone: torch.nn.Module, weights_sha: str,
                 before_embedding: Callable[[], None] | None = None) -> tuple[torch.Tensor, FeatureStore, int]:
    """Backbone maps [N, C, T', H', W'] of every video of the index; extracts only what is missing.
    `before_embedding` is called (in every process) when some video must be embedded, before any is."""
    store = FeatureStore(s.home, p.backbone.name, weights_sha, p.frames, s.precision, pixels=pixels_for(s))
    rank, size = distributed.world()
    # one job at a time per store: another waits, then finds the features there (rank 0 holds it for its job)
    with store.locked() if rank == 0 else contextlib.nullcontext():
        if rank == 0:  # before the other ranks start writing: what is left now was left by a killed process
            remove_stale_temporaries(store.dir, store.dir / "packs", *subfolders(store.dir / "videos"))
            if s.recompute and store.renew(index.videos):  # once per process: the methods after the first share it
                log(f"--recompute: the features of the {len(index)} {index.part} videos are computed anew")
        distributed.barrier()
        missing = store.missing(index.videos)
        if missing and before_embedding:
            before_embedding()
        todo = missing[rank::size]  # each process embeds its share; one process: all
        if todo:
            cached = len(index) - len(missing)  # a stopped extraction resumes from the entries it wrote
            share = f" of the {len(missing)} missing, shared among {size} processes" if size > 1 else ""  # rank 0 speaks for its share
            log(f"embedding {len(todo)} {index.part} videos{share}" + (f" ({cached} are in the feature store already)" if cached else ""))
            started = time.perf_counter()
            with progress_bar(f"embedding {index.part} videos", len(todo), s.show_progress, unit="videos") as advance, phase("embedding videos with the backbone"):
                store.extract(todo, backbone, s.device, s.extract_batch, s.workers, progress=advance)
            seconds = time.perf_counter() - started
            log(f"embedded {len(todo)} {index.part} videos in {seconds:.1f} s ({len(todo) / max(seconds, 1e-9):.1f} clips/s)")
        distributed.barrier()
        if rank == 0:
            maps = store.load(index.videos)  # rank 0 writes the pack; the others map it once it is there
        distributed.barrier()
        if rank != 0:
            maps = store.load(index.videos)
    return maps, store, len(todo)


def versions() -> dict:
    return {"harness": harness.__version__, "torch": torch.__version__, "torchvision": torchvision_version(), "numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version()}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and tensor bytes (the identity of weights that live in a checkpoint)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode() + b"\0" + state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fine_tuned_backbone(p: Protocol, method: str, s: Settings, backbone: torch.nn.Module, weights_sha: str, checkpoint: Path | None) -> str:
    """Load the backbone a checkpoint fine-tuned, if it holds one; return the SHA-256 of the weights in use."""
    path = checkpoint or checkpoint_dir(s.home, p.name, method) / "best.pt"
    if not (methods.get(method).trainable or checkpoint) or not path.is_file():
        return weights_sha
    state = load_checkpoint(path)
    if "backbone_state" not in state:
        return weights_sha
    if state["backbone"].get("base_weights_sha256") != weights_sha:
        raise HarnessError(f"checkpoint {path} fine-tuned other backbone weights than the protocol's", fix=f"retrain it: fsv-bench train --protocol {p.source} --method {method}")
    backbone.load_state_dict(state["backbone_state"])
    return state["backbone"]["weights_sha256"]


def head_settings(p: Protocol, method: str, given: dict | None = None, where: str | None = None, context: dict | None = None) -> dict:
    """Every setting of `method`'s head, defaults included: those `given` (default: the protocol's
    methods.<method> section) resolved by the registry and checked against the head's settings_schema (bounds
    that are facts of the run where `context` holds them: `harness.limits.predicted_context`). A setting the head
    lacks, one JSON cannot hold, or one outside its schema is an error naming the field and where it came from."""
    try:
        return methods.resolve_settings(method, p.methods.get(method, {}) if given is None else given, context)
    except methods.SettingsError as e:
        raise _settings_error(e, p, method, where) from None


def check_settings_before_work(p: Protocol, method: str) -> None:
    """`method`'s settings against the backbone map the protocol predicts (harness.limits.predicted_context: a probe
    on the meta device, 1 s the first time in a process): called before pretraining or embedding, so that a
    setting the head cannot take fails before minutes of work; once the maps exist, the head is built against
    the real map, which checks the same schema exactly."""
    from harness.limits import predicted_context

    head_settings(p, method, context=predicted_context(p))


def _settings_error(e: "methods.SettingsError", p: Protocol | None, method: str, where: str | None) -> HarnessError:
    field = f"methods.{method}.{e.setting}" if e.setting else f"methods.{method}"
    if where is None and p is not None:
        where = p.where(field)
    elif where is not None and e.setting:
        where = f"{where}, field '{field}'"
    return HarnessError(str(e), where=where, fix=e.fix or f"use the settings the head's constructor takes (see methods/{method}.py)")


def build_head(method: str, settings: dict, context: dict, where: str, protocol: Protocol | None = None) -> torch.nn.Module:
    """The head `method` with these resolved settings; a value the head refuses is an error naming `where` (or,
    given the `protocol` the settings came from, the field methods.<method>.<setting> in it)."""
    try:
        return methods.create(method, context=context, **settings)
    except methods.SettingsError as e:
        raise _settings_error(e, protocol, method, None if protocol is not None else where) from None
    except ValueError as e:
        raise HarnessError(str(e), where=where, fix=f"use a value that methods/{method}.py accepts") from None


def _settings_differences(saved: dict, wanted: dict, method: str) -> list[str]:
    return [f"methods.{method}.{k}: checkpoint {json.dumps(saved.get(k))}, protocol {json.dumps(wanted.get(k))}" for k in sorted(saved.keys() | wanted.keys()) if saved.get(k) != wanted.get(k)]


def head_for(p: Protocol, method: str, s: Settings, feature_shape: tuple, weights_sha: str, checkpoint: Path | None = None) -> tuple[torch.nn.Module, str | None]:
    """The head to evaluate, and the SHA-256 of its checkpoint (None for a head without parameters). A
    checkpoint's head is rebuilt with the settings stored in it; a protocol asking for other settings is an error."""
    cls = methods.get(method)
    wanted = head_settings(p, method)
    if not cls.trainable and checkpoint is None:
        return build_head(method, wanted, {"feature_shape": feature_shape}, p.where(f"methods.{method}"), p), None
    path = checkpoint or checkpoint_dir(s.home, p.name, method) / "best.pt"
    if not path.is_file():
        raise HarnessError(
            f"method '{method}' has no trained checkpoint for protocol '{p.name}' ({path})",
            fix=f"train one: fsv-bench train --protocol {p.source} --method {method} (or pass --checkpoint FILE)",
        )
    state = load_checkpoint(path)
    if state.get("method") != method:
        raise HarnessError(f"checkpoint {path} holds method '{state.get('method')}', not '{method}'", fix="pass the checkpoint of the method you evaluate")
    if state.get("backbone", {}).get("weights_sha256") != weights_sha:
        raise HarnessError(
            f"checkpoint {path} was trained on features of other backbone weights",
            fix=f"retrain it: fsv-bench train --protocol {p.source} --method {method}",
        )
    saved = head_settings(p, method, state.get("method_config") or {}, where=f"checkpoint {path}")
    differences = _settings_differences(saved, wanted, method)
    if differences:
        sets = " ".join(f"--set methods.{method}.{k}={json.dumps(v, separators=(',', ':'))}" for k, v in saved.items() if v != wanted.get(k))
        raise HarnessError(
            f"checkpoint {path} was trained with other '{method}' settings than the protocol asks for: " + "; ".join(differences),
            where=p.where(f"methods.{method}"),
            fix=f"evaluate it with the settings it was trained with ({sets}), or retrain with the protocol's settings",
        )
    context = {"feature_shape": feature_shape, "num_train_classes": state.get("num_train_classes", 0)}
    head = build_head(method, saved, context, f"checkpoint {path}")
    try:
        head.load_state_dict(state["state_dict"])
    except RuntimeError as e:  # shapes of another feature map (e.g. frames.count changed since training)
        detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).splitlines()[0])
        raise HarnessError(
            f"checkpoint {path} does not fit the '{method}' head for features of shape {tuple(feature_shape)}: {detail}",
            fix=f"the protocol's frames or backbone changed since training; retrain: fsv-bench train --protocol {p.source} --method {method}",
        ) from None
    return head, sha256_file(path)


#: episode sets already sampled in this process: every method of a protocol scores the same ones
_EPISODE_SETS: dict[str, EpisodeSet] = {}


def episode_set(index: VideoIndex, p: Protocol, n_episodes: int) -> EpisodeSet:
    """The protocol's test episodes over `index`, sampled once per process (episode i depends only on the seed,
    i and the index, so a set is shared by every method run here)."""
    videos = hashlib.sha256("\n".join(v.key for v in index.videos).encode()).hexdigest()
    key = canonical_json([p.way, p.shot, p.query_per_class, n_episodes, p.seed, index.part, index.classes, videos])
    if key not in _EPISODE_SETS:
        _EPISODE_SETS[key] = EpisodeSet(index, p.way, p.shot, p.query_per_class, n_episodes, p.seed, protocol=p)
    return _EPISODE_SETS[key]


#: the layout of summary.json (README: "summary.json"); 2 added code, data, origin and environment provenance
SUMMARY_SCHEMA_VERSION = 3


def run_fingerprint(parts: dict) -> str:
    """The identity of a run: equal fingerprints mean equal protocol, episodes, data, weights, settings and code."""
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:16]


def _check_run_request(n_episodes: int, s: Settings, p: Protocol | None = None) -> None:
    from harness.limits import check_episodes

    if n_episodes < 1:
        raise HarnessError(f"{n_episodes} episodes were asked for; a run scores at least one", where="--episodes", fix="pass --episodes N with N >= 1, or leave it out for the protocol's number")
    if s.batch_episodes < 1:
        raise HarnessError(f"--batch-episodes {s.batch_episodes} cannot score anything", where="--batch-episodes", fix="pass a number >= 1 (it never changes a prediction)")
    if p is not None:  # at most MAX_EPISODES, and the memory they take (before any is sampled)
        check_episodes(n_episodes, p.where("episodes") if n_episodes == p.episodes else "--episodes", p.way, p.shot, p.query_per_class)


def _check_figures(records: list[dict], expected: int, per_episode: np.ndarray) -> None:
    """A run is stored only with a number for every episode asked for, all finite."""
    if len(records) != expected or not len(records) or not np.isfinite(per_episode).all():
        raise HarnessError(f"the run produced {len(records)} records for {expected} episodes, or non-finite accuracies; nothing was stored",
                           fix="run the same command again; if it repeats, the head gives NaN (check its settings and checkpoint)")


def run_method(p: Protocol, method: str, s: Settings, n_episodes: int | None = None, head: torch.nn.Module | None = None, checkpoint: Path | None = None) -> dict:
    """Evaluate one method on the protocol's test episodes; write records and summary; return the summary.
    A finished run of the very same fingerprint (see `run_fingerprint`) is served from disk after its
    records are checked; `s.recompute` scores it again."""
    if head is None:
        from methods.external import import_modules

        import_modules(p.imports, p.where)  # they may register `method` (the command line imported them already)
        if not methods.registered(method):
            raise HarnessError(f"unknown method '{method}'", fix=f"use one of: {', '.join(methods.list_methods())}, or a Head class as package.module:Class (README: Adding a method)")
    n_episodes = p.episodes if n_episodes is None else n_episodes
    _check_run_request(n_episodes, s, p)
    settings_check = functools.partial(check_settings_before_work, p, method) if head is None else None
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    index = load_index(p, s, p.dataset.part)
    episodes = episode_set(index, p, n_episodes)
    backbone, weights_sha, _ = backbone_for(p, s)
    weights_sha = fine_tuned_backbone(p, method, s, backbone, weights_sha, checkpoint) if head is None else weights_sha
    t = time.perf_counter()
    maps, store, extracted = features_for(p, s, index, backbone, weights_sha, before_embedding=settings_check)
    timings["features_s"] = time.perf_counter() - t
    checkpoint_sha256 = None
    if head is None:
        head, checkpoint_sha256 = head_for(p, method, s, tuple(maps.shape[1:]), weights_sha, checkpoint)

    method_config = head.config()
    code = code_record(type(head), p.backbone.name)
    data_sha256 = index_fingerprint(index, p.frames)
    fingerprint = run_fingerprint({
        "protocol": p.sha256, "episodes": episodes.sha256, "method": method, "config": method_config, "checkpoint": checkpoint_sha256,
        "weights": weights_sha, "features": store.key, "data": data_sha256,
        "code": {k: code[k] for k in ("harness_version", "head_sha256", "backbone_code_sha256")},
    })
    folder = RunFolder(s.results, p.name, method, fingerprint)
    with folder.locked():  # every writer of the folder holds this lock: a temporary file there now is a killed writer's
        remove_stale_temporaries(folder.dir, *subfolders(folder.run_dir.parent), *subfolders(folder.parts.parent))
    finished = folder.finished_run(fingerprint)
    if finished is not None and not s.recompute:
        folder.make_latest()  # the run asked for last is the one leaderboard and compare read
        log(f"{method} on {p.name}: results of this very run are already there (records checked; use --recompute to score again)")
        return {**finished, "records_path": str(folder.records_path)}
    done = {start: folder.read_chunk(path) for start, path in folder.finished_chunks().items()} if not s.recompute else {}
    resumed = sum(len(chunk) for chunk in done.values())
    distributed.barrier()  # every process has read what was there before any of them writes a chunk
    log(f"{method} on {p.name}: scoring {len(episodes) - resumed} episodes" + (f" ({resumed} were scored before a stop)" if resumed else ""))

    t = time.perf_counter()
    with phase(f"scoring {method}"):
        reps = embed_pool(head, maps, s.device)
    timings["embed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rank, size = distributed.world()
    if size > 1:  # each process scores its chunks; rank 0 then reads them all back and merges by index
        starts = range(0, len(episodes), s.batch_episodes)
        mine = {start for k, start in enumerate(starts) if k % size == rank}
        share = sum(min(start + s.batch_episodes, len(episodes)) - start for start in mine)
        with progress_bar(f"{method} on {p.name} (rank {rank} of {size}: its share)", share, s.show_progress, unit="episodes") as advance:
            evaluate(head, reps, episodes, s.batch_episodes, done=done, on_chunk=folder.write_chunk, progress=advance, only=mine)
        distributed.barrier()
        if rank != 0:
            return {}
        done = {start: folder.read_chunk(path) for start, path in folder.finished_chunks().items()}
    # under torchrun every chunk is done by now: rank 0 only reads them back, with no progress to show
    with progress_bar(f"{method} on {p.name}", len(episodes), s.show_progress if size == 1 else False, unit="episodes") as advance, phase(f"scoring {method}"):
        records = evaluate(head, reps, episodes, s.batch_episodes, done=done, on_chunk=folder.write_chunk, progress=advance)
    timings["heads_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    per_episode = np.array([r["accuracy"] for r in records], dtype=np.float64)
    _check_figures(records, len(episodes), per_episode)
    summary = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "method": method,
        "run_fingerprint": fingerprint,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": list(sys.argv),
        "method_config": method_config,
        "checkpoint_sha256": checkpoint_sha256,
        "protocol": p.name,
        "protocol_sha256": p.sha256,
        "protocol_content": p.content(),
        "protocol_origin": protocol_origin(p),
        "episode_set_sha256": episodes.sha256,
        "video_set_sha256": index.sha256,
        "data_sha256": data_sha256,
        "n_episodes": len(records),
        "n_videos": len(index),
        "excluded_videos": index.excluded,
        "renamed_videos": index.renamed,
        "linked_outside_root": index.linked,
        **accuracy_summary(per_episode),
        "intervals": level_intervals(records),
        "backbone": {"name": p.backbone.name, "weights_sha256": weights_sha, "feature_store": store.key, "precision": s.precision, "pixels": store.pixels, "feature_shape": list(maps.shape[1:])},
        "code": code,
        "versions": versions(),
        "device": str(s.device) if s.device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(s.device)})",
        "environment": environment(s.device),
        "processes": size,
        "resumed_episodes": resumed,
        "videos_embedded_this_run": extracted,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    summary["records_sha256"] = folder.finish(records, summary)
    summary["records_path"] = str(folder.records_path)
    return summary

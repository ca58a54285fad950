"""Episodic meta-training of a head on the train split, with model selection on val episodes (never test).

Each optimizer step accumulates the gradients of `tasks_per_batch` training episodes; training episode i is
episode i of its own seeded set, so a resumed run sees exactly the episodes an uninterrupted one would.
Every `val_every` steps a fixed set of val episodes is scored; the best is kept as best.pt, and last.pt
holds everything needed to resume (weights, optimizer, schedule, the CPU's and the GPU's random state, log).

The recipe (optimizer, schedule, steps, ...) is, field by field, the protocol's `train:` where it sets the
field, else the head's `train_defaults` (its reference's recipe), else DEFAULTS; checkpoints and the summary
record every setting and where it came from.

A stopped or killed training resumes from last.pt when the same command runs again, and reaches the bytes of
an uninterrupted one (best.pt, last.pt, train_log.jsonl); a finished one is not trained again.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import harness.packages  # noqa: F401  (the harness's own methods/, whatever sys.path holds)
import methods
from harness.checkpoints import checkpoint_dir, load_checkpoint, save_checkpoint
from harness.console import log, progress_bar, warn
from harness.episodes import EpisodeSet
from harness.errors import HarnessError
from harness.data.fingerprint import index_fingerprint
from harness.evaluate import embed_pool, evaluate
from harness.files import atomic_write_json, atomic_write_text
from harness.data.clips import augment, jittered_indices, load_clip, read_frames
from harness.locks import file_lock
from harness.phases import phase
from harness.pipeline import Settings, backbone_for, build_head, check_settings_before_work, features_for, head_settings, load_index, remove_stale_temporaries, state_sha256
from harness.protocol import MAX_TRAIN_EPISODES, Protocol, TrainSpec, train_spec
from harness.provenance import head_code, sources_sha256
from harness.results import record_line
from methods import feature_view

#: the recipe where neither the protocol's `train:` nor the head's `train_defaults` sets a field (one entry per
#: recipe field of TrainSpec, the fields other than the seeds)
DEFAULTS = {
    "steps": 1000,
    "tasks_per_batch": 16,
    "query_per_class": 5,
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "val_every": 100,
    "val_episodes": 500,
    "finetune_backbone": False,
    "crop": "random",
    "flip": False,
    "jitter": 5,
}
#: episodes per forward pass inside one optimizer step (bounds memory; the gradient is the same)
MICRO_BATCH = 16


def resolve_train_settings(p: Protocol, head_cls) -> tuple[dict, dict]:
    """The train settings of head class `head_cls` under `p`, and where each came from: {field: value} and
    {field: "protocol" | "method" | "harness"}. A field the protocol's `train:` sets wins over the head's
    `train_defaults`, which wins over DEFAULTS; the seeds are always the protocol's."""
    where = f"{head_cls.__module__}.{head_cls.__qualname__}.train_defaults"
    given = getattr(head_cls, "train_defaults", {})
    method = train_spec(given, where)
    seeds = sorted(set(given) - set(DEFAULTS))
    if seeds:
        raise HarnessError(f"train_defaults sets {', '.join(seeds)}, which only a protocol sets", where=where, fix=f"remove {', '.join(seeds)} from train_defaults")
    settings, source = {}, {}
    for f in dataclasses.fields(TrainSpec):
        if getattr(p.train, f.name) is not None:
            settings[f.name], source[f.name] = getattr(p.train, f.name), "protocol"
        elif f.name in given:
            settings[f.name], source[f.name] = getattr(method, f.name), "method"
        else:
            settings[f.name], source[f.name] = DEFAULTS[f.name], "harness"
    return settings, source


def _recipe(t: dict) -> str:
    """What the training does, in a line: e.g. '2000 steps of 64 tasks, sgd lr 0.01 momentum 0.0, constant'."""
    momentum = f" momentum {t['momentum']}" if t["optimizer"] == "sgd" else ""
    decay = f" weight decay {t['weight_decay']}" if t["weight_decay"] else ""
    tuned = ", fine-tuning the backbone" if t["finetune_backbone"] else ""
    return f"{t['steps']} steps of {t['tasks_per_batch']} tasks, {t['optimizer']} lr {t['lr']}{momentum}{decay}, {t['schedule']}{tuned}"


def _optimizer(params, t: dict) -> torch.optim.Optimizer:
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    return torch.optim.Adam(params, lr=t["lr"], weight_decay=t["weight_decay"])


def _schedule(opt, t: dict):
    if t["schedule"] == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, t["steps"]) / t["steps"])))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def _val_accuracy(head, val_maps: torch.Tensor, val_episodes: EpisodeSet, s: Settings) -> float:
    records = evaluate(head, embed_pool(head, val_maps, s.device), val_episodes, s.batch_episodes)
    return 100.0 * float(np.mean([r["accuracy"] for r in records]))


@torch.inference_mode()
def _embed_clips(backbone, videos, p: Protocol, s: Settings, batch: int = 32) -> torch.Tensor:
    """Maps of videos with test-time preprocessing, in memory: val features of a backbone being fine-tuned."""
    backbone.eval()
    maps = [backbone(torch.stack([load_clip(v, p.frames) for v in videos[i : i + batch]]).to(s.device)).float().cpu() for i in range(0, len(videos), batch)]
    return torch.cat(maps)


def _backbone_payload(backbone, name: str, base_sha: str) -> dict:
    """What a checkpoint of a fine-tuned backbone carries: its weights, their hash, and the weights it began from."""
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    return {"backbone_state": state, "backbone": {"name": name, "weights_sha256": state_sha256(state), "base_weights_sha256": base_sha}}


#: what identifies a training run: a last.pt that agrees on all of these is the same run, stopped
RUN_IDENTITY = ("method", "method_config", "protocol_sha256", "num_train_classes", "train_settings", "data_sha256", "code")


def _base_weights(backbone: dict) -> str | None:
    """The SHA-256 of the backbone weights a run started from (a fine-tuned one records them apart)."""
    return backbone.get("base_weights_sha256", backbone.get("weights_sha256")) if isinstance(backbone, dict) else None


def _differences(saved: dict, common: dict) -> list[str]:
    """The fields in which a saved training state (last.pt, summary.json) is not of the run `common` describes."""
    diff = [k for k in RUN_IDENTITY if saved.get(k) != common[k]]
    if _base_weights(saved.get("backbone")) != common["backbone"]["weights_sha256"]:
        diff.append("backbone weights")
    return diff


def _log_lines(history: list[dict]) -> str:
    return "".join(record_line(h) for h in history)


def _finished_summary(out: Path, common: dict, state: dict) -> dict | None:
    """The summary of this very run when it has finished (summary.json written after its last step)."""
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or _differences(summary, common) or summary.get("selected_step") != state["best"]["step"]:
        return None
    return summary


def _check_request(p: Protocol, method: str, t: dict, source: dict) -> None:
    """Before any video is read: the training and val episodes (at most MAX_TRAIN_EPISODES and MAX_EPISODES,
    and their memory). (The head's settings: see `train`.)"""
    from harness.limits import check_episodes

    places = {"protocol": lambda f: p.where(f"train.{f}"), "method": lambda f: f"{method}'s train_defaults, field 'train.{f}'", "harness": lambda f: f"harness.train.DEFAULTS, field 'train.{f}'"}
    n = t["steps"] * t["tasks_per_batch"]
    if n > MAX_TRAIN_EPISODES:
        raise HarnessError(f"train.steps {t['steps']:,} x train.tasks_per_batch {t['tasks_per_batch']:,} is {n:,} training episodes, more than {MAX_TRAIN_EPISODES:,}",
                           where=places[source["steps"]]("steps"), fix="lower train.steps or train.tasks_per_batch; the references train on 100,000 to 128,000 episodes")
    check_episodes(n, places[source["steps"]]("steps"), p.way, p.shot, t["query_per_class"], what="training episodes", most=MAX_TRAIN_EPISODES, records=False)
    check_episodes(t["val_episodes"], places[source["val_episodes"]]("val_episodes"), p.way, p.shot, p.query_per_class, what="val episodes")


def train(p: Protocol, method: str, s: Settings, resume: bool = False, out: Path | None = None) -> dict:
    """Train `method` under protocol `p`; return the training summary (what was selected, on what).

    A stopped run of the very same training (its last.pt agrees on protocol, method, settings and backbone
    weights) is resumed, and a finished one is not trained again (`s.recompute` starts again from step 0).
    `resume=True` (`--resume`) insists: a last.pt of another run is an error instead of being replaced."""
    from methods.external import import_modules

    import_modules(p.imports, p.where)  # they may register `method` (the command line imported them already)
    head_cls = methods.get(method)
    if not getattr(head_cls, "trainable", False):
        raise HarnessError(f"method '{method}' has nothing to train", fix=f"evaluate it directly: fsv-bench run --protocol {p.source} --method {method}")
    if resume and s.recompute:
        raise HarnessError("--resume continues a stopped training and --recompute starts it again: pass one of them")
    t, source = resolve_train_settings(p, head_cls)
    _check_request(p, method, t, source)
    out = out or checkpoint_dir(s.home, p.name, method)
    settings_check = functools.partial(check_settings_before_work, p, method)
    if not (out / "summary.json").is_file():  # a training to do: checked before any work; else before any
        settings_check()  # pretraining or embedding it turns out to need, and when the head is built
    # one training per folder at a time: a second process waits, then resumes or finds the run finished
    with file_lock(out / ".lock", what=f"training {method} on {p.name}"), phase(f"training {method}"):
        remove_stale_temporaries(out)  # under the lock, so left by a killed process
        return _train(p, method, s, t, source, resume, out, settings_check)


def _train(p: Protocol, method: str, s: Settings, t: dict, source: dict, resume: bool, out: Path, settings_check) -> dict:
    started = time.perf_counter()
    finetune = t["finetune_backbone"]
    backbone, weights_sha, _ = backbone_for(p, s, pretrain_if_missing=True, before_pretraining=settings_check)
    train_index, val_index = load_index(p, s, "train"), load_index(p, s, "val")
    if finetune:  # maps come from clips at every step; the cached ones give only the shapes
        settings_check()
        train_maps = val_maps = _embed_clips(backbone, val_index.videos[:1], p, s)
    else:
        train_maps, _, _ = features_for(p, s, train_index, backbone, weights_sha, before_embedding=settings_check)
        val_maps, _, _ = features_for(p, s, val_index, backbone, weights_sha, before_embedding=settings_check)
    train_episodes = EpisodeSet(train_index, p.way, p.shot, t["query_per_class"], t["steps"] * t["tasks_per_batch"], t["seed"], protocol=p)
    val_episodes = EpisodeSet(val_index, p.way, p.shot, p.query_per_class, t["val_episodes"], t["val_seed"], protocol=p)

    torch.manual_seed(t["seed"])
    context = {"feature_shape": tuple(train_maps.shape[1:]), "num_train_classes": len(train_index.classes)}
    head = build_head(method, head_settings(p, method, context=context), context, p.where(f"methods.{method}"), p).to(s.device)
    backbone.to(s.device)
    def videos_view(positions: np.ndarray) -> torch.Tensor:
        """The head's view of the given train videos: cached, or from augmented clips through the backbone."""
        if not finetune:
            return train_view[torch.from_numpy(positions)].to(s.device)
        clips = torch.stack([
            augment(read_frames(v, jittered_indices(v.n_frames, p.frames.count, t["jitter"], rng)), p.frames, t["crop"], t["flip"], rng)
            for v, rng in ((train_index.videos[i], np.random.default_rng([t["seed"], step, int(i)])) for i in positions)
        ])
        backbone.train()
        return feature_view(backbone(clips.to(s.device)), head.view)

    common = {
        "method": method,
        "method_config": head.config(),
        "protocol": p.name,
        "protocol_sha256": p.sha256,
        "backbone": {"name": p.backbone.name, "weights_sha256": weights_sha},
        "num_train_classes": len(train_index.classes),
        # the train and val videos' content, and the code that trains: other data or code, another training
        "data_sha256": {"train": index_fingerprint(train_index, p.frames), "val": index_fingerprint(val_index, p.frames)},
        "code": {"head_sha256": head_code(type(head))["head_sha256"], "train_sha256": sources_sha256(["harness.train"])},
        "train_settings": t,
        # where each setting came from: the protocol, the head's train_defaults (its reference), the harness
        "train_settings_source": source,
    }
    step, best, history = 0, {"val_accuracy": -1.0, "step": 0}, []
    last_path = out / "last.pt"
    state = None
    if last_path.is_file() and not s.recompute:
        try:
            state = load_checkpoint(last_path)
            diff = _differences(state, common)
        except HarnessError as e:
            if resume:
                raise
            warn(f"{last_path} cannot be resumed from ({e.what}); training starts again")
            state, diff = None, []
        if diff:
            if resume:
                raise HarnessError(
                    f"{last_path} was written for another run ({', '.join(diff)} differ)",
                    fix="train without --resume to start again, or pass the protocol and settings it was trained with",
                )
            warn(f"{last_path} holds a training of other settings ({', '.join(diff)} differ); it is replaced by this one")
            state = None
    if state is not None and state["step"] >= t["steps"]:
        finished = _finished_summary(out, common, state)
        if finished is not None:
            if _read_bytes(out / "train_log.jsonl") != _log_lines(state["history"]).encode():
                atomic_write_text(out / "train_log.jsonl", _log_lines(state["history"]))
            log(f"{method} on {p.name} is trained already: step {state['step']} of {t['steps']} (use --recompute to train again)")
            return finished
    # what only a training needs (the first optimizer alone costs a second of imports)
    params = list(head.parameters()) + (list(backbone.parameters()) if finetune else [])
    opt = _optimizer(params, t)
    sched = _schedule(opt, t)
    # the view once: the heads read it at every step, and the train pool fits in memory at these sizes
    train_view = None if finetune else feature_view(train_maps.float(), head.view)
    if state is not None:
        head.load_state_dict(state["state_dict"])
        if finetune:
            backbone.load_state_dict(state["backbone_state"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        if s.device.type == "cuda" and "cuda_rng" in state:  # dropout on a GPU draws from the GPU's generator
            torch.cuda.set_rng_state(state["cuda_rng"], s.device)
        step, best, history = state["step"], state["best"], state["history"]
        log(f"resuming {method} at step {step} of {t['steps']}")
    else:
        from_method = sorted(k for k, v in source.items() if v == "method")
        log(f"training {method} on {p.name}: {_recipe(t)} (from {method}'s train_defaults: {', '.join(from_method) or 'nothing'})")
    resumed_from = step

    with progress_bar(f"training {method}", t["steps"] - step, s.show_progress, unit="steps") as advance:
        while step < t["steps"]:
            head.train()
            ids = np.arange(step * t["tasks_per_batch"], (step + 1) * t["tasks_per_batch"])
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for start in range(0, len(ids), MICRO_BATCH):
                b = train_episodes.batch(ids[start : start + MICRO_BATCH])
                e = len(b.ids)
                support = head.embed(videos_view(b.support.ravel()))
                query = head.embed(videos_view(b.query.ravel()))
                loss = head.loss(
                    support.reshape(e, -1, *support.shape[1:]),
                    torch.from_numpy(b.support_labels).to(s.device),
                    query.reshape(e, -1, *query.shape[1:]),
                    torch.from_numpy(b.query_labels).to(s.device),
                    p.way,
                    class_ids=torch.from_numpy(b.classes).to(s.device),
                )
                (loss * e / len(ids)).backward()
                loss_sum += loss.item() * e
            if not math.isfinite(loss_sum):
                given = {"protocol": p.where("train.lr"), "method": f"{method}'s train_defaults, field 'train.lr'", "harness": "harness.train.DEFAULTS, field 'train.lr'"}
                where = given[source["lr"]]
                raise HarnessError(f"training {method} diverged at step {step + 1} (loss is {loss_sum})", where=where, fix="set a lower train.lr in the protocol's train: section")
            opt.step()
            sched.step()
            step += 1
            advance(1)
            entry = {"step": step, "loss": loss_sum / len(ids), "lr": sched.get_last_lr()[0]}
            if step % t["val_every"] == 0 or step == t["steps"]:
                if finetune:
                    val_maps = _embed_clips(backbone, val_index.videos, p, s)
                entry["val_accuracy"] = _val_accuracy(head, val_maps, val_episodes, s)
                tuned = _backbone_payload(backbone, p.backbone.name, weights_sha) if finetune else {}
                if entry["val_accuracy"] > best["val_accuracy"]:
                    best = {"val_accuracy": entry["val_accuracy"], "step": step}
                    save_checkpoint(out / "best.pt", {**common, **tuned, "state_dict": head.state_dict(), "step": step, "val_accuracy": entry["val_accuracy"]})
                history.append(entry)
                rng = {"rng": torch.get_rng_state(), **({"cuda_rng": torch.cuda.get_rng_state(s.device)} if s.device.type == "cuda" else {})}
                save_checkpoint(last_path, {**common, **tuned, "state_dict": head.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(), **rng, "step": step, "best": best, "history": history})
                atomic_write_text(out / "train_log.jsonl", _log_lines(history))
                log(f"{method} step {step}/{t['steps']}: loss {entry['loss']:.4f}, val accuracy {entry['val_accuracy']:.2f}% (best {best['val_accuracy']:.2f}% at step {best['step']})")
            else:
                history.append(entry)

    # again after the loop: a run stopped after its last last.pt but before this log resumes with no step to do
    atomic_write_text(out / "train_log.jsonl", _log_lines(history))
    summary = {
        **common,
        "selected_step": best["step"],
        "selected_val_accuracy": best["val_accuracy"],
        "selected_on": {"part": "val", "episodes": t["val_episodes"], "seed": t["val_seed"], "episode_set_sha256": val_episodes.sha256},
        "train_episode_seed": t["seed"],
        "resumed_from_step": resumed_from,
        "train_seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(out / "best.pt"),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None

"""Evaluation: embed every video of the pool once, then score thousands of episodes per batch."""
from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import torch

from harness.episodes import EpisodeSet
from harness.threads import lanes, run_in_lanes
from methods import Head, feature_view
from methods.base import block_size

#: the most bytes of embedded videos gathered for one call of a head: small enough that a slice and the head's
#: temporaries stay in the caches (ProtoNet at 2048 channels: 3,800 episodes/s with 32 MiB slices, 14,200 with 1 MiB)
GATHER_BYTES = 2**20
#: videos in every call of a head's `embed` by `embed_pool`
EMBED_BLOCK = 64


@torch.inference_mode()
def embed_pool(head: Head, maps: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The head's per-video representation of every video: maps [N, C, T, H, W] -> [N, ...]. Every call of
    head.embed gets exactly EMBED_BLOCK videos, a short last block padded with copies of its last video: the low
    bits of a product can depend on its number of rows, and a video's embedding must be the same bits whatever
    pool it is embedded in (alone or among others, in any order)."""
    head.eval().to(device)
    starts = range(0, len(maps), EMBED_BLOCK)  # blocks side by side in lanes (harness/threads.py): the same bits
    return torch.cat(run_in_lanes(lambda i: _embed_block(head, maps[i : i + EMBED_BLOCK], device), starts, torch.inference_mode, cpu=torch.device(device).type == "cpu"))


def _embed_block(head: Head, maps: torch.Tensor, device: torch.device) -> torch.Tensor:
    """maps [n, ...], n <= EMBED_BLOCK -> the head's embedding [n, ...] of a block padded to EMBED_BLOCK videos."""
    n = len(maps)
    if n < EMBED_BLOCK:
        maps = torch.cat([maps, maps[-1:].expand(EMBED_BLOCK - n, *maps.shape[1:])])  # [EMBED_BLOCK, C, T, H, W]
    return head.embed(feature_view(maps.to(device).float(), head.view))[:n]


@torch.inference_mode()
def score_episodes(head: Head, reps: torch.Tensor, episodes: EpisodeSet, ids: np.ndarray) -> list[dict]:
    """Records for the given episode indices (any subset or order gives the same record per episode)."""
    b = episodes.batch(ids)
    device = reps.device
    support_ids, query_ids = torch.from_numpy(b.support).to(device), torch.from_numpy(b.query).to(device)
    labels = torch.from_numpy(b.support_labels).to(device)
    E, S, Q = len(b.ids), b.support.shape[1], b.query.shape[1]
    # The episodes' videos are gathered a slice of episodes at a time, into two buffers per lane reused for every
    # slice: gathering a whole batch of big embeddings (STAF: 53 x 2048 floats a video) into fresh memory costs more
    # than the head itself. Slices run side by side in lanes of one thread each (harness/threads.py). Every head
    # gives the same predictions whatever the batch (tests/test_heads.py), so neither the slicing nor the lanes
    # change a bit of the result; a slice is a whole number of the head's blocks.
    block = block_size(getattr(head, "episodes_per_block", 1), device)
    step = min(E, block * max(1, GATHER_BYTES // (reps[0].numel() * reps.element_size() * (S + Q) * block)))
    if device.type == "cpu":
        step = min(step, block * -(-E // (2 * lanes() * block)))  # at least two slices a lane
    buffers = threading.local()

    def score_slice(lo: int) -> torch.Tensor:
        if not hasattr(buffers, "support"):
            buffers.support, buffers.query = reps.new_empty(step * S, *reps.shape[1:]), reps.new_empty(step * Q, *reps.shape[1:])
        n = min(step, E - lo)
        support = torch.index_select(reps, 0, support_ids[lo : lo + n].flatten(), out=buffers.support[: n * S])
        query = torch.index_select(reps, 0, query_ids[lo : lo + n].flatten(), out=buffers.query[: n * Q])
        logits = head(support.view(n, S, *reps.shape[1:]), labels[lo : lo + n], query.view(n, Q, *reps.shape[1:]), episodes.way)
        return logits.argmax(dim=-1)  # [n, Q]

    predictions = run_in_lanes(score_slice, range(0, E, step), torch.inference_mode, cpu=device.type == "cpu")
    predictions = torch.cat(predictions).cpu().numpy()  # [E, Q]
    index = episodes.index
    names, keys = index.classes, [v.key for v in index.videos]
    correct = predictions == b.query_labels  # [E, Q]
    accuracy = correct.mean(axis=1).tolist()  # exact: a few small integers over Q
    # plain lists: one conversion per batch instead of one numpy call per episode and field
    class_pos, support_pos, query_pos = b.classes.tolist(), b.support.tolist(), b.query.tolist()
    query_labels, predicted, hits = b.query_labels.tolist(), predictions.tolist(), correct.astype(int).tolist()
    records = []
    for e, i in enumerate(b.ids.tolist()):
        records.append(
            {
                "episode": i,
                "classes": [names[c] for c in class_pos[e]],
                "support": [keys[v] for v in support_pos[e]],
                "query": [keys[v] for v in query_pos[e]],
                "query_labels": query_labels[e],
                "predictions": predicted[e],
                "correct": hits[e],
                "accuracy": accuracy[e],
            }
        )
    return records


def evaluate(
    head: Head,
    reps: torch.Tensor,
    episodes: EpisodeSet,
    batch_episodes: int = 1000,
    done: dict[int, list[dict]] | None = None,
    on_chunk: Callable[[int, list[dict]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    only: set[int] | None = None,
) -> list[dict]:
    """All episodes' records in order. Chunks start at multiples of `batch_episodes`; those in `done`
    (from a run that was stopped) are reused, each new one is handed to `on_chunk` as it finishes.
    With `only`, just the chunks starting there are scored (one process's share of a distributed run)."""
    done = done or {}
    records: list[dict] = []
    for start in range(0, len(episodes), batch_episodes):
        if only is not None and start not in only:
            continue
        ids = np.arange(start, min(start + batch_episodes, len(episodes)))
        chunk = done.get(start)
        if chunk is None or [r["episode"] for r in chunk] != ids.tolist():
            chunk = score_episodes(head, reps, episodes, ids)
            if on_chunk:
                on_chunk(start, chunk)
        records.extend(chunk)
        if progress:
            progress(len(chunk))
    return records

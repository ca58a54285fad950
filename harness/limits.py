"""What a loaded protocol asks of the registries, the backbone and the machine, checked before any work.

`check_protocol` (run by every command that takes a protocol, right after it is read):
* the modules `imports:` lists are imported (they may register methods), then `methods:` names registered
  methods, and every setting it gives is one the head takes, of the kind and within
  the bounds of the head's `settings_schema` (bounds that are facts of the run, such as the map's frames, taken
  from the predicted map shape below);
* the frames fit the backbone: `frames.crop` is at least the backbone's spatial stride (the size one position
  of its map covers: 32 for tiny3d, the 3D ResNets and the per-frame ResNets, 16 for torchvision's video
  ResNets), and a clip of `frames.count` x crop x crop goes through it;
* the memory that decoding one clip and embedding one batch of clips needs (at least) is there: RAM for the
  resized frames, and the device's memory for the clips, the backbone's weights and its largest activation.
The backbone is probed on PyTorch's "meta" device (shapes only: no memory, no arithmetic), once per backbone and
clip size in a process. A backbone that cannot run on the meta device is not probed (its checks are skipped).

`check_episode_memory` (before a run or a training samples its episodes): the episodes held in memory.
"""
from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.protocol import MAX_EPISODES, Protocol

#: clips per batch when embedding (harness.pipeline.Settings.extract_batch)
EXTRACT_BATCH = 16
#: memory one sampled episode and its record take, about: a base and a part per video (measured: 1.7 KB for
#: 5-way 1-shot 1-query, 2.6 KB for 5-way 5-shot 5-query)
EPISODE_BYTES, EPISODE_VIDEO_BYTES = 1300, 28


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


# ------------------------------------------------------------------------------------------------ machine


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on `device`: the GPU's free memory, or the RAM available to this process
    (MemAvailable, within a cgroup's limit); None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # no driver, or another process holds the device
            return None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit, used = Path("/sys/fs/cgroup/memory.max").read_text().strip(), Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(int(limit) - int(used))
    except OSError:
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return max(0, min(found))


def _need(needed: int, device: torch.device | str, what: str, where: str, fix: str, about: str = "at least") -> None:
    have = available_memory(device)
    if have is not None and needed > have:
        place = "this machine has" if torch.device(device).type == "cpu" else f"{device} has"
        raise HarnessError(f"{what} needs {about} {gb(needed)} of memory, and {place} {gb(have)} free", where=where, fix=fix)


def _culprit(p: Protocol, fields: dict[str, float]) -> str:
    """Which of several fields to name for a figure they make together: one given with --set, else the one
    furthest above its usual value ({field: value / usual value})."""
    given = [f for f in fields if p.origins.get(f) == "--set"]
    return (given or sorted(fields, key=lambda f: -fields[f]))[0]


def _where_section(p: Protocol, dotted: str) -> str:
    """p.where(dotted), or where a field inside it was written when the section itself has no origin."""
    if dotted not in p.origins:
        inner = next((k for k in p.origins if k.startswith(dotted + ".")), None)
        if inner is not None:
            return f"{p.origins[inner]}, field '{dotted}'"
    return p.where(dotted)


# ------------------------------------------------------------------------------------------------ backbone


@functools.lru_cache(maxsize=64)
def _probe(backbone: str, count: int, crop: int) -> tuple[tuple[int, ...], int, int] | str:
    """(map shape (C, T, H, W), the largest activation's elements, parameter count) of one clip of `count` x crop
    x crop through `backbone` on the meta device; the error text when it does not go through."""
    from harness.backbones import create_backbone

    try:
        with torch.device("meta"):
            model = create_backbone(backbone).eval()
    except HarnessError:  # an unknown backbone
        raise
    except Exception as e:  # a backbone that cannot be built on the meta device is not probed
        return f"cannot be built on the meta device: {e}"
    largest = [0]

    def note(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    hooks = [m.register_forward_hook(note) for m in model.modules()]
    try:
        with torch.inference_mode():
            out = model(torch.empty(1, 3, count, crop, crop, device="meta"))
    except Exception as e:  # a size the backbone's convolutions cannot take
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    finally:
        for h in hooks:
            h.remove()
    return tuple(int(d) for d in out.shape[1:]), largest[0], sum(p.numel() for p in model.parameters())


#: the clip the spatial stride is measured with
_STRIDE_PROBE = (4, 512)


def spatial_stride(backbone: str) -> int | None:
    """Pixels of the crop per position of the backbone's map (32 for a ResNet); None if it cannot be probed."""
    probe = _probe(backbone, *_STRIDE_PROBE)
    if isinstance(probe, str) or len(probe[0]) != 4 or probe[0][2] < 1:
        return None
    return max(1, round(_STRIDE_PROBE[1] / probe[0][2]))


def map_shape(p: Protocol) -> tuple[int, ...] | None:
    """The backbone map's (C, T, H, W) for the protocol's clips, or None where it cannot be predicted."""
    if spatial_stride(p.backbone.name) is None:
        return None
    probe = _probe(p.backbone.name, p.frames.count, p.frames.crop)
    return None if isinstance(probe, str) else probe[0]


def predicted_context(p: Protocol) -> dict:
    """The run's facts a head's settings may be bounded by, as far as the protocol alone tells them."""
    shape = map_shape(p)
    return {"feature_shape": shape} if shape else {}


def check_frames(p: Protocol, device: torch.device | str = "cpu", workers: int = 0) -> tuple[int, ...] | None:
    """The protocol's frames against the backbone and the memory (see the module docstring); the predicted map."""
    f, name = p.frames, p.backbone.name
    # decoding: each frame is resized to a short side of `resize` (4:3 frames, the usual video shape: wider ones
    # need more), then centre-cropped and turned into floats
    long_side = -(-f.resize * 4 // 3)
    decode = f.count * 3 * f.resize * long_side + f.count * 3 * f.crop * f.crop * 8
    _need(decode * max(1, workers), "cpu", f"decoding one clip of frames.count {f.count:,} at frames.resize {f.resize:,} "
          f"({f.count:,} frames x 3 x {f.resize:,} x {long_side:,} bytes for 4:3 video{f', in each of {workers} workers' if workers > 1 else ''})",
          p.where(_culprit(p, {"frames.resize": f.resize / 256, "frames.count": f.count / 16})),
          "lower frames.resize (the short side the frames are scaled to: 256 for 224 crops, as the references do) or frames.count", about="about")
    stride = spatial_stride(name)
    if stride is None:
        return None
    if f.crop < stride:
        raise HarnessError(f"frames.crop {f.crop} is smaller than what one position of backbone '{name}''s map covers ({stride} x {stride} pixels): "
                           "its map would be made of padding", where=p.where("frames.crop"),
                           fix=f"use frames.crop of at least {stride} (and frames.resize at least as large); the references use 224, the synthetic benchmark 64")
    probe = _probe(name, f.count, f.crop)
    if isinstance(probe, str):
        raise HarnessError(f"backbone '{name}' cannot take clips of {f.count} frames of {f.crop} x {f.crop}: {probe}", where=p.where("frames.count"),
                           fix="use the frame count and crop the backbone was made for (16 x 112 or 16 x 224 for 3D ResNets, 8 x 224 for per-frame ResNets)")
    shape, activation, params = probe
    clip = 3 * f.count * f.crop * f.crop * 4
    embed = EXTRACT_BATCH * (clip + activation * 4) + params * 4
    device = torch.device(device)
    if device.type == "cpu":
        embed += decode
    _need(embed, device, f"embedding a batch of {EXTRACT_BATCH} clips of {f.count:,} x {f.crop:,} x {f.crop:,} with backbone '{name}' "
          f"(clips {gb(EXTRACT_BATCH * clip)}, its largest activation {gb(EXTRACT_BATCH * activation * 4)}, weights {gb(params * 4)})",
          p.where(_culprit(p, {"frames.crop": f.crop / 224, "frames.count": f.count / 16})), "lower frames.crop or frames.count, or use a device with more memory (--device)")
    return shape


# ------------------------------------------------------------------------------------------------- methods


def check_methods(p: Protocol, context: dict) -> None:
    """The protocol's `imports:` imported, then its `methods:` section: registered methods, and the settings it
    gives within their schemas."""
    import harness.packages  # noqa: F401  (the harness's own methods/, whatever sys.path holds)
    import methods
    from methods.external import import_modules

    from harness.pipeline import _settings_error

    import_modules(p.imports, p.where)
    for name, given in p.methods.items():
        if not methods.registered(name):
            known = methods.list_methods()
            near = difflib.get_close_matches(str(name), known, n=1)
            raise HarnessError(f"methods holds settings for '{name}', which is no registered method: they would be used by no run",
                               where=_where_section(p, f"methods.{name}"), fix=(f"did you mean '{near[0]}'? " if near else "") + f"registered methods: {', '.join(known)}")
        try:
            methods.resolve_settings(name, given)  # kinds and fixed bounds, defaults included
            methods.registry.check_settings(name, {k: v for k, v in given.items()}, context)  # what it gives, against the run's facts
        except methods.SettingsError as e:
            raise _settings_error(e, p, name, None) from None


def check_protocol(p: Protocol, device: torch.device | str = "cpu", workers: int = 0) -> dict:
    """Everything `check_frames` and `check_methods` check; returns the predicted context ({"feature_shape": ...})."""
    from harness.backbones import list_backbones

    if p.backbone.name not in list_backbones():
        raise HarnessError(f"unknown backbone '{p.backbone.name}'", where=p.where("backbone.name"), fix=f"use one of: {', '.join(list_backbones())}")
    shape = check_frames(p, device, workers)
    context = {"feature_shape": shape} if shape else {}
    check_methods(p, context)
    return context


# ------------------------------------------------------------------------------------------------ episodes


def check_episodes(n: int, where: str, way: int, shot: int, query: int, what: str = "episodes", most: int = MAX_EPISODES, records: bool = True) -> None:
    """`n` episodes of this shape: at most `most`, and the memory they take (each sampled episode is kept, and
    with `records` its record too) there."""
    if n > most:
        raise HarnessError(f"{n:,} {what} were asked for, more than the {most:,} one set may hold", where=where,
                           fix=f"ask for at most {most:,} (the literature evaluates on 10,000; beyond that the interval no longer narrows)")
    each = (EPISODE_BYTES + EPISODE_VIDEO_BYTES * way * (shot + query)) // (1 if records else 2)
    _need(n * each, "cpu", f"holding {n:,} {what} ({way}-way {shot}-shot, {query} queries per class; about {each:,} bytes each"
          f"{' with its record' if records else ''})", where, "ask for fewer episodes")

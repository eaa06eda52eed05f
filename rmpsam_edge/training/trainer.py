"""Compact trainer (plain PyTorch, CPU friendly): AdamW, warm-up + cosine schedule, periodic resumable
checkpoints in the official key layout ({'state_dict': {backbone.*, neck.*, panoptic_head.*}}).

Departure from the official recipe, on purpose: the official backbone keeps BatchNorm frozen (mmdet
``norm_eval=True``) because it starts from ImageNet weights. We train from scratch (no ImageNet weights ship
in any package here), so the trainer puts the backbone's BatchNorm in train mode.
"""
import json
import math
import os
import signal
import threading
import time
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from ..modeling import build_model
from .batching import make_batch
from .objective import batch_losses
from .synthetic import SceneGenerator
from .vocab import demo_class_embed

TRAIN_SEED_BASE = 1_000_000
DEFAULTS = {"variant": "r18", "imgsz": 192, "steps": 3000, "batch_images": 2, "clip_frames": 3,
            "clip_every": 2, "num_prompts": 8, "lr": 2e-4, "weight_decay": 0.05, "warmup": 300,
            "grad_clip": 1.0, "seed": 0, "threads": 1, "ckpt_minutes": 5.0, "iou_weight": 1.0,
            "max_things": 6, "time_budget_s": 0.0, "prompt_weight": 1.0,
            "cls_lr_scale": 0.1}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def set_train_mode(model: nn.Module) -> None:
    """model.train(), but with the backbone BatchNorm ALSO in train mode (from-scratch training)."""
    nn.Module.train(model, True)


def progress(step: int, elapsed: float, cfg: Dict) -> float:
    """Fraction of the run done: by steps, or by training time when a time budget is set (whichever is
    further), so a run stopped by its time budget still ends with the learning rate decayed."""
    t = step / float(max(1, cfg["steps"]))
    if cfg.get("time_budget_s"):
        t = max(t, elapsed / float(cfg["time_budget_s"]))
    return t


def lr_at(step: int, cfg: Dict, elapsed: float = 0.0) -> float:
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    t0 = progress(cfg["warmup"], 0.0, cfg)
    t = (progress(step, elapsed, cfg) - t0) / max(1e-6, 1 - t0)
    return cfg["lr"] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def step_batch(gen: SceneGenerator, step: int, cfg: Dict) -> Dict:
    """The batch of a step is a pure function of (seed, step): resuming replays the same data."""
    base = TRAIN_SEED_BASE * (cfg["seed"] + 1) + step * 16
    images = [gen.image(base + i) for i in range(cfg["batch_images"])]
    clips = []
    if cfg["clip_every"] and step % cfg["clip_every"] == 0:
        clips.append(gen.clip(base + 8, cfg["clip_frames"]))
    rng = np.random.default_rng([cfg["seed"], step, 7])
    return make_batch(images, clips, rng, cfg["num_prompts"])


def official_state_dict(model: nn.Module, half: bool = False) -> Dict[str, torch.Tensor]:
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().clone()
        if half and v.is_floating_point():
            v = v.half()
        sd[k] = v
    return sd


def save_checkpoint(path: str, model, optimizer, step: int, cfg: Dict, extra: Optional[Dict] = None,
                    meta: Optional[Dict] = None) -> None:
    """Atomic: a hidden sibling renamed over ``path`` when complete (a kill never leaves a torn checkpoint).
    ``meta``: more plain entries for the checkpoint's meta (what the strict loader reports, e.g. weights_note)."""
    from rmpsam_edge.atomic import atomic_file
    obj = {"state_dict": official_state_dict(model), "optimizer": optimizer.state_dict(),
           "meta": dict(meta or {}, step=step, config=json.dumps(cfg), extra=json.dumps(extra or {}))}
    with atomic_file(path, force=True) as tmp:
        torch.save(obj, tmp)


def load_training_checkpoint(path: str, model, optimizer=None) -> Dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(obj["state_dict"], strict=True)
    if optimizer is not None and "optimizer" in obj:
        load_optimizer_state(optimizer, obj["optimizer"], model)
    return {"step": int(obj["meta"]["step"]), "config": json.loads(obj["meta"]["config"]),
            "extra": json.loads(obj["meta"].get("extra", "{}"))}


CLASS_BRANCH = ("cls_fcs.", "cls_proj.", "panoptic_cls.")


def _no_decay(name: str, p) -> bool:
    return p.ndim <= 1 or "kernels" in name or "embedding" in name or "mask_tokens" in name


def param_groups(model, cfg):
    """-> list of (group options, [names]). The class branches (logits = 100 or 1000 x cosine: very sharp) get
    ``cls_lr_scale`` x the learning rate; norms, biases and embeddings no weight decay."""
    groups = {}
    for n, p in model.named_parameters():
        cls = any(c in n for c in CLASS_BRANCH)
        key = (cls, _no_decay(n, p))
        groups.setdefault(key, []).append(n)
    out = []
    for (cls, nd), names in sorted(groups.items()):
        out.append(({"weight_decay": 0.0 if nd else cfg["weight_decay"],
                     "lr_scale": cfg.get("cls_lr_scale", 1.0) if cls else 1.0}, names))
    return out


def make_optimizer(model, cfg):
    params = dict(model.named_parameters())
    groups = [dict(opts, params=[params[n] for n in names], names=names) for opts, names in param_groups(model, cfg)]
    return torch.optim.AdamW(groups, lr=cfg["lr"])


def _legacy_names(model):
    """Parameter order of checkpoints written before named groups (two groups: decay, then no decay)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n.endswith(".weight") and "kernels" in n or "embedding" in n
         or "mask_tokens" in n else decay).append(n)
    return decay + no_decay


def load_optimizer_state(optimizer, state: Dict, model) -> None:
    """Load optimizer state by parameter NAME, so a run can resume with a different grouping."""
    old_names = []
    for g in state["param_groups"]:
        if "names" not in g:
            old_names = _legacy_names(model)
            break
        old_names += list(g["names"])
    old_ids = [i for g in state["param_groups"] for i in g["params"]]
    by_name = {n: state["state"][i] for n, i in zip(old_names, old_ids) if i in state["state"]}
    params = dict(model.named_parameters())
    for g in optimizer.param_groups:
        for n in g["names"]:
            if n in by_name:
                optimizer.state[params[n]] = {k: (v.clone() if torch.is_tensor(v) else v)
                                              for k, v in by_name[n].items()}


class Trainer(object):
    desc = "train"  # the progress bar's label

    def __init__(self, out_dir: str, cfg: Optional[Dict] = None, photos=None, log=print):
        self.cfg = dict(DEFAULTS)
        self.cfg.update(cfg or {})
        self.out_dir = out_dir
        self.log = log
        torch.manual_seed(self.cfg["seed"])
        self.model = build_model(self.cfg["variant"], torch.from_numpy(demo_class_embed()))
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.gen = SceneGenerator(self.cfg["imgsz"], "train", photos=photos, max_things=self.cfg["max_things"])
        self.step = 0
        self.elapsed = 0.0

    @property
    def last_path(self) -> str:
        return os.path.join(self.out_dir, "last.pth")

    def resume(self) -> bool:
        if not os.path.isfile(self.last_path):
            return False
        info = load_training_checkpoint(self.last_path, self.model, self.optimizer)
        self.step = info["step"]
        self.elapsed = float(info["extra"].get("elapsed_s", 0.0))
        return True

    def save(self, path: Optional[str] = None) -> str:
        path = path or self.last_path
        save_checkpoint(path, self.model, self.optimizer, self.step, self.cfg, {"elapsed_s": self.elapsed})
        return path

    def progress_note(self, avg: Dict[str, float]) -> str:
        return "loss %.3f pm %.3f miou %.2f" % (avg["total"], avg["prompt_mask"], avg["prompt_miou"])

    def on_checkpoint(self) -> None:
        """Called after each periodic save of last.pth (subclasses report there)."""

    def train_step(self) -> Dict[str, float]:
        set_train_mode(self.model)
        batch = step_batch(self.gen, self.step, self.cfg)
        lr = lr_at(self.step, self.cfg, self.elapsed)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        losses = batch_losses(self.model, batch, self.cfg["iou_weight"], prompt_weight=self.cfg["prompt_weight"])
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if self.cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["grad_clip"])
        self.optimizer.step()
        self.step += 1
        out = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
        out["lr"] = lr
        return out

    def run(self, steps: Optional[int] = None, show_progress: bool = True) -> Dict[str, float]:
        steps = self.cfg["steps"] if steps is None else steps
        os.makedirs(self.out_dir, exist_ok=True)
        last_ckpt = time.time()
        avg: Dict[str, float] = {}
        bar = None
        stop = []  # SIGTERM/SIGHUP/SIGINT: finish the step, save last.pth, then raise Stopped (exit 128+signal)

        def on_signal(signum, frame):
            if stop:  # a second signal: exit at once (last.pth is always complete: atomic writes)
                os._exit(128 + int(signum))
            stop.append(signum)

        sigs = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
        old = {s: signal.signal(s, on_signal) for s in sigs} if _main_thread() else {}
        if show_progress:
            from ..progress import Progress
            bar = Progress(steps, self.desc, initial=self.step)
        while self.step < steps and progress(self.step, self.elapsed, self.cfg) < 1.0 and not stop:
            t0 = time.time()
            out = self.train_step()
            self.elapsed += time.time() - t0
            for k, v in out.items():
                avg[k] = v if k not in avg else 0.98 * avg[k] + 0.02 * v
            if bar is not None:
                bar.update(1, self.progress_note(avg))
            if self.step % 50 == 0:
                self.log("step %d %s elapsed %.0fs" % (self.step, " ".join(
                    "%s=%.4g" % (k, v) for k, v in sorted(avg.items())), self.elapsed))
            if time.time() - last_ckpt > self.cfg["ckpt_minutes"] * 60:
                self.save()
                self.on_checkpoint()
                last_ckpt = time.time()
            if self.step % 1000 == 0:
                self.save(os.path.join(self.out_dir, "step_%06d.pth" % self.step))
        self.save()
        for s, h in old.items():
            signal.signal(s, h)
        if bar is not None:
            bar.close()
        if stop:
            from rmpsam_edge.signals import Stopped
            self.log("stopped by %s at step %d; saved %s (continue with --resume)"
                     % (signal.Signals(stop[0]).name, self.step, self.last_path))
            raise Stopped(stop[0])
        return avg

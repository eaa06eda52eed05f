"""Distillation (nanosam-style, no labels): a student backbone + neck learns the teacher's neck features; the
teacher's head (decoder cascade, both adapters, prompt encoding, vocabulary) is copied into the student, so the
student's object queries line up slot by slot with the teacher's.

Loss per step on a batch of augmented views (``distill_data``), teacher outputs computed once per view (cached):
    feature  ||F_s - F_t||^2 / mean(F_t^2)                    F: (B, 256, S/4, S/4) neck output
    prompt   BCE(student mask logits, sigmoid(teacher logits)) + Dice vs the teacher's binary masks, on random
             clicks and boxes (B, Np) through the shared head
    object   per query slot (100): BCE of the mask logits vs sigmoid(teacher) + KL of the class distributions
             (softened by CLASS_T; the object adapter's cosine logits are very sharp)
Gradients reach the student's encoder through the frozen head; ``head_lr`` > 0 fine-tunes the head too, at that
learning rate. The student's backbone BatchNorm statistics stay frozen, as in the official recipe (measured here:
training them from scratch made the held-out agreement swing between reports). The loop, schedule (warm-up + cosine, time budget), resumable last.pth, signals and progress are
the trainer's (``Distiller`` is a ``Trainer``).
"""
import json
import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_checkpoint
from ..errors import UserError
from ..modeling import build_model
from .batching import normalise_images
from .distill_data import TeacherCache, make_view, random_prompts
from .losses import dice_loss
from .trainer import Trainer, load_training_checkpoint, lr_at, save_checkpoint

CLASS_T = 10.0
DEFAULTS = {"student": "r18", "imgsz": 192, "steps": 2000, "batch_images": 4, "views": 8, "num_prompts": 8,
            "lr": 1e-3, "head_lr": 0.0, "weight_decay": 1e-4, "warmup": 50, "grad_clip": 1.0, "seed": 0,
            "threads": 1, "ckpt_minutes": 5.0, "time_budget_s": 0.0, "feature_weight": 1.0, "prompt_weight": 1.0,
            "object_weight": 1.0, "cache_mb": 1024.0, "device": "cpu"}


def load_teacher(path: str, class_embed: np.ndarray):
    """The teacher checkpoint (strict loader; one line for anything else) -> (model in eval mode, info)."""
    if os.path.isdir(path):
        raise UserError("--teacher %s is a folder (a bundle?); distill needs the PyTorch checkpoint (.pth) "
                        "a bundle is exported from" % path)
    model, info = load_checkpoint(path, class_embed)
    return model, info


def build_student(variant: str, teacher, init: Optional[str], seed: int):
    """The student: ``init`` (a checkpoint of ``variant``) or seeded random weights, with the teacher's head and
    vocabulary copied in. -> (model, info about the init)."""
    if init:
        if os.path.isdir(init):
            raise UserError("--init %s is a folder (a bundle?); pass a PyTorch checkpoint (.pth)" % init)
        student, info = load_checkpoint(init)
        if info["variant"] != variant:
            raise UserError("--init %s is an %s checkpoint but --student is %s; pass --student %s or another --init"
                            % (init, info["variant"], variant, info["variant"]))
        source = {"init": os.path.basename(init), "init_sha256": info["sha256"]}
    else:
        torch.manual_seed(seed)
        student = build_model(variant)
        source = {"init": None, "seed": seed}
    head = teacher.panoptic_head.state_dict()
    try:
        student.panoptic_head.load_state_dict(head, strict=True)
    except RuntimeError as exc:  # pragma: no cover - both come from the same class
        raise UserError("the teacher's head does not fit the student: %s" % str(exc).splitlines()[0])
    student.panoptic_head.fc_cls = teacher.panoptic_head.fc_cls.clone()
    return student, source


def soft_bce(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(teacher_logits))


def distill_losses(student, views: torch.Tensor, boxes: torch.Tensor, target: Dict[str, torch.Tensor],
                   cfg: Dict) -> Dict[str, torch.Tensor]:
    """views (B, 3, S, S) normalised, boxes (B, Np, 4), target: the teacher's feats (B, 256, h, w), prompt_masks
    (B, Np, h, w), cls (B, 100, K+1), masks (B, 100, h, w) -> named losses and their weighted ``total``."""
    fs = student.encode(views)
    ft = target["feats"]
    out = {"feature": F.mse_loss(fs, ft) / ft.pow(2).mean().clamp(min=1e-8)}
    total = cfg["feature_weight"] * out["feature"]
    head = student.panoptic_head
    if cfg["prompt_weight"]:
        pm = head.forward_prompts(fs, boxes)["masks"].flatten(2).flatten(0, 1)
        tm = target["prompt_masks"].flatten(2).flatten(0, 1)
        out["prompt"] = soft_bce(pm, tm) + dice_loss(pm, (tm > 0).float())
        total = total + cfg["prompt_weight"] * out["prompt"]
    if cfg["object_weight"]:
        o = head.forward_objects(fs)
        t_prob = F.softmax(target["cls"] / CLASS_T, -1)
        kl = (t_prob * (torch.log(t_prob.clamp(min=1e-12)) - F.log_softmax(o["cls"] / CLASS_T, -1))).sum(-1).mean()
        out["object"] = soft_bce(o["masks"], target["masks"]) + kl
        total = total + cfg["object_weight"] * out["object"]
    out["total"] = total
    return out


def encoder_latency(model, size: int, runs: int, device: str) -> float:
    """Median seconds of one ``encode`` of a (1, 3, size, size) input (after one warm-up run)."""
    x = torch.zeros(1, 3, size, size, device=device)
    times = []
    with torch.no_grad():
        for i in range(runs + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.encode(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


class Distiller(Trainer):
    """A ``Trainer`` whose step is a distillation step. frames: [(name, RGB uint8)] to train on; held_out:
    frames for the report (``distill_report``); teacher / teacher_info from ``load_teacher``."""

    desc = "distill"

    def __init__(self, out_dir: str, teacher, teacher_info: Dict, frames, cfg: Optional[Dict] = None,
                 init: Optional[str] = None, held_out=None, log=print, num_things: int = 0, report_extra=None):
        self.cfg = dict(DEFAULTS)
        self.cfg.update(cfg or {})
        self.out_dir, self.log = out_dir, log
        self.device = self.cfg["device"]
        self.teacher = teacher.eval().to(self.device)
        self.teacher_info = teacher_info
        self.frames = frames
        self.held_out = held_out or []
        self.num_things = num_things
        self.report_extra = report_extra or {}
        student, self.init_info = build_student(self.cfg["student"], teacher, init, self.cfg["seed"])
        self.model = student.to(self.device)
        self.teacher.panoptic_head.fc_cls = self.teacher.panoptic_head.fc_cls.to(self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        train_head = self.cfg["head_lr"] > 0
        for p in self.model.panoptic_head.parameters():
            p.requires_grad_(train_head)
        self.optimizer = self._optimizer()
        self.cache = TeacherCache(self.cfg["cache_mb"])
        self.step = 0
        self.elapsed = 0.0
        self.last_losses: Dict[str, float] = {}
        self.reported_step = -1

    def _optimizer(self):
        groups = []
        enc = [(n, p) for n, p in self.model.named_parameters() if not n.startswith("panoptic_head.")]
        groups.append({"params": [p for _, p in enc], "names": [n for n, _ in enc], "lr_scale": 1.0,
                       "weight_decay": self.cfg["weight_decay"]})
        if self.cfg["head_lr"] > 0:
            head = [(n, p) for n, p in self.model.named_parameters() if n.startswith("panoptic_head.")]
            groups.append({"params": [p for _, p in head], "names": [n for n, _ in head],
                           "lr_scale": self.cfg["head_lr"] / self.cfg["lr"], "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=self.cfg["lr"])

    # ------------------------------------------------------------------ data
    def view(self, frame: int, view: int):
        """The augmented view ``view`` of frame ``frame`` and its prompts: a pure function of (seed, frame,
        view), so the teacher's outputs on it can be cached and a resumed run replays the same data."""
        rng = np.random.default_rng([self.cfg["seed"], frame, view, 3])
        size = self.cfg["imgsz"]
        return make_view(self.frames[frame][1], rng, size), random_prompts(rng, size, self.cfg["num_prompts"])

    def step_keys(self, step: int) -> List[tuple]:
        rng = np.random.default_rng([self.cfg["seed"], step, 11])
        n = self.cfg["batch_images"]
        return [(int(f), int(v)) for f, v in zip(rng.integers(0, len(self.frames), n),
                                                   rng.integers(0, self.cfg["views"], n))]

    @torch.no_grad()
    def teacher_outputs(self, x: torch.Tensor, boxes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One teacher pass over the views x (B, 3, S, S) -> feats, prompt_masks, cls, masks (CPU tensors)."""
        t = self.teacher
        x, boxes = x.to(self.device), boxes.to(self.device)
        feats = t.encode(x)
        o = t.panoptic_head.forward_objects(feats)
        pm = t.panoptic_head.forward_prompts(feats, boxes)["masks"]
        return {"feats": feats.cpu(), "prompt_masks": pm.cpu(), "cls": o["cls"].cpu(), "masks": o["masks"].cpu()}

    def batch(self, step: int):
        """-> views (B, 3, S, S), boxes (B, Np, 4), teacher targets; the teacher runs once, on the views that
        are not cached."""
        keys = self.step_keys(step)
        made = {k: self.view(*k) for k in dict.fromkeys(keys)}  # a view drawn twice in a step is made once
        entries = {k: self.cache.get(k) for k in made}
        todo = [k for k, e in entries.items() if e is None]
        if todo:
            out = self.teacher_outputs(normalise_images([made[k][0] for k in todo]),
                                       torch.from_numpy(np.stack([made[k][1] for k in todo])))
            for j, k in enumerate(todo):
                entries[k] = {name: v[j].clone() for name, v in out.items()}
                self.cache.put(k, entries[k])
        x = normalise_images([made[k][0] for k in keys])
        boxes = torch.from_numpy(np.stack([made[k][1] for k in keys]))
        target = {name: torch.stack([entries[k][name] for k in keys]).to(self.device) for name in entries[keys[0]]}
        return x.to(self.device), boxes.to(self.device), target

    # ------------------------------------------------------------------ loop (Trainer.run drives it)
    def train_step(self) -> Dict[str, float]:
        x, boxes, target = self.batch(self.step)
        self.model.train()  # backbone BatchNorm statistics frozen (the official norm_eval); the neck's adapt
        lr = lr_at(self.step, self.cfg, self.elapsed)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        losses = distill_losses(self.model, x, boxes, target, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if self.cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           self.cfg["grad_clip"])
        self.optimizer.step()
        self.step += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["lr"] = lr
        self.last_losses = out
        return out

    def progress_note(self, avg: Dict[str, float]) -> str:
        return "loss %.4f feature %.4f" % (avg["total"], avg["feature"])

    def on_checkpoint(self) -> None:
        self.report()

    def report(self) -> Dict:
        """Held-out agreement with the teacher now -> appended to OUT/distill.json and OUT/distill.md."""
        from .distill_report import agreement, append_report
        if self.reported_step == self.step:  # a checkpoint right at the end: already reported
            return {}
        self.reported_step = self.step
        self.model.eval()
        row = {"step": self.step, "train_seconds": round(self.elapsed, 1), "loss": self.last_losses.get("total"),
               "cache": self.cache.stats()}
        row.update(agreement(self.teacher, self.model, self.held_out, self.cfg["imgsz"], self.num_things,
                             self.device))
        append_report(self.out_dir, row, self.report_extra)
        self.log("report at step %d: feature cosine %.4f, prompt-mask IoU %.4f"
                 % (self.step, row["feature_cosine_mean"], row["mask_iou_mean"]))
        return row

    # ------------------------------------------------------------------ checkpoints
    def distilled_from(self) -> Dict:
        return {"teacher": os.path.basename(self.teacher_info["path"]), "teacher_sha256": self.teacher_info["sha256"],
                "teacher_variant": self.teacher_info["variant"], "frames": len(self.frames), "steps": self.step}

    def weights_note(self) -> str:
        d = self.distilled_from()
        return ("distilled %s student of %s %s (sha256 %s...) on %d unlabeled frames, %d steps"
                % (self.cfg["student"], d["teacher_variant"], d["teacher"], d["teacher_sha256"][:12], d["frames"],
                   d["steps"]))

    def save(self, path: Optional[str] = None) -> str:
        path = path or self.last_path
        meta = {"weights_note": self.weights_note(), "distilled_from": json.dumps(self.distilled_from()),
                "variant": self.cfg["student"], "input_size": int(self.cfg["imgsz"]), "steps": self.step,
                "train_seconds": float(self.elapsed), "train_config": json.dumps(self.cfg)}
        save_checkpoint(path, self.model, self.optimizer, self.step, self.cfg,
                        {"elapsed_s": self.elapsed, "init": self.init_info,
                         "teacher_sha256": self.teacher_info["sha256"]}, meta=meta)
        return path

    def resume(self) -> bool:
        if not os.path.isfile(self.last_path):
            return False
        info = load_training_checkpoint(self.last_path, self.model, self.optimizer)
        sha = info["extra"].get("teacher_sha256")
        if sha and sha != self.teacher_info["sha256"]:
            raise UserError("%s was distilled from another teacher (sha256 %s...); pass that --teacher, or "
                            "--force to overwrite it and start over" % (self.last_path, sha[:12]))
        for state in self.optimizer.state.values():
            for k, v in state.items():
                if torch.is_tensor(v) and k != "step":
                    state[k] = v.to(self.device)
        self.step = info["step"]
        self.elapsed = float(info["extra"].get("elapsed_s", 0.0))
        return True

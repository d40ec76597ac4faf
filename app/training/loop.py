"""The training loop: LoRA/DoRA on the denoiser (and optionally the CLIP text encoders) of any
family with a TrainingSpec: SD 1.x/2.x/XL (DDPM objective) and Flux.1, SD 3.5, Qwen-Image (flow
matching, `app.training.objectives`).

One `Trainer` serves the CLI and the Train LoRA node. Everything random in a step comes from
one CPU generator whose state is checkpointed, and the data order of epoch e is a pure function
of (seed, e), so a run stopped at step n and resumed reaches the weights of a run that never
stopped. Stopping (the `stop` event: Ctrl-C or a cancelled node) is honoured between optimizer
steps and always writes a checkpoint first. Mixed precision and a grad scaler are used on GPUs
only; on the CPU everything is float32.

With `dist` (a process group from `app.training.distributed`, `imagebash train-lora --gpus N`) the
same loop runs in N processes: the data order is planned in global batches of batch_size x gpus,
each process takes positions r, r+N, ... of every batch, the gradients of the adapter are summed
over the processes, and only rank 0 writes checkpoints, samples, logs and the LoRA. Without it
(N = 1) nothing of that runs.
"""

from __future__ import annotations

import math
import pathlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.engine.families import get_family
from app.training import adapters, checkpoint
from app.training.config import TrainConfig, checkpoint_root, lora_out_path
from app.training.dataset import Dataset, scan


class TrainingStopped(Exception):
    """Training was stopped on request; a checkpoint was written first (`result.checkpoint`)."""

    def __init__(self, result: TrainResult) -> None:
        super().__init__(f"training stopped at step {result.steps}/{result.total_steps}; "
                         f"checkpoint saved in {result.checkpoint}")
        self.result = result


@dataclass
class Progress:
    """One report per optimizer step (and per preparation stage, with phase != 'train')."""

    step: int
    total: int
    loss: float = float("nan")
    avg_loss: float = float("nan")
    lr: float = 0.0
    elapsed: float = 0.0
    eta: float = 0.0
    epoch: int = 0
    phase: str = "train"

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    def text(self) -> str:
        if self.phase != "train":
            return self.phase
        return f"step {self.step}/{self.total} loss {self.avg_loss:.4f} lr {self.lr:.2e} ETA {format_eta(self.eta)}"


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass
class TrainResult:
    lora: pathlib.Path | None
    peft: pathlib.Path | None
    steps: int
    total_steps: int
    losses: list[float] = field(default_factory=list)
    checkpoint: pathlib.Path | None = None
    epoch_times: list[float] = field(default_factory=list)
    samples: list[pathlib.Path] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)


class Trainer:
    """Prepare once (data, model, adapter, optimizer), then `run()`; see the module docstring."""

    def __init__(self, cfg: TrainConfig, *, progress: Callable[[Progress], None] | None = None,
                 log: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                 dist: Any = None) -> None:
        self.cfg = cfg.validate()
        self.dist = dist  # None: one process; else rank, world, barrier(), ... (app.training.distributed)
        self.rank = dist.rank if dist is not None else 0
        self.progress = progress or (lambda p: None)
        self.log = log or (lambda msg: None)
        self.stop = stop or threading.Event()
        self.dataset: Dataset | None = None
        self.base: Any = None
        self._plans: dict[int, list[list[int]]] = {}
        self.step = 0
        self.total_steps = 0
        self.on_samples: Callable[[list[pathlib.Path]], None] | None = None
        self.extra_metadata: dict[str, str] = {}  # added to the exported files' metadata

    # paths -------------------------------------------------------------------------------------
    @property
    def out_path(self) -> pathlib.Path:
        return lora_out_path(self.cfg)

    @property
    def checkpoint_root(self) -> pathlib.Path:
        return checkpoint_root(self.cfg)

    # preparation -------------------------------------------------------------------------------
    def prepare(self) -> None:
        import torch

        from app.engine.devices import pick_device
        from app.engine.fingerprint import fingerprint
        from app.training.base import load_base
        from app.training.cache import EmbeddingCache

        cfg = self.cfg
        self.progress(Progress(0, 0, phase="scanning images"))
        self.dataset = ds = scan(cfg.data, cfg)
        for line in ds.warnings():
            self.log(line)
        seen = sum(it.repeats for it in ds.items)
        if cfg.batch_size * cfg.gpus > seen:
            from app.training.config import ConfigError

            what = f"batch_size {cfg.batch_size}" if cfg.gpus == 1 else \
                f"the global batch {cfg.batch_size * cfg.gpus} (batch_size {cfg.batch_size} x {cfg.gpus} gpus)"
            raise ConfigError(f"{what} is more than the {seen} image{'s' if seen != 1 else ''} "
                              f"(with repeats) in {cfg.data}: lower batch_size or add images")
        if cfg.gpus > 1 and self.dist is None:
            self.log(f"warning: gpus = {cfg.gpus} but this is one process: it trains the global batch of "
                     f"{cfg.batch_size * cfg.gpus} alone (`imagebash train-lora --gpus {cfg.gpus}` runs "
                     f"{cfg.gpus} processes)")
        self.log(ds.summary())
        self.device = pick_device(cfg.device)
        self.precision = self._precision(torch)
        self.progress(Progress(0, 0, phase="loading base model"))
        # read in the training dtype on the CPU: a 12B Flux in float32 would not fit a 24 GB card on
        # its way to fp8, and the frozen weights never need more than the compute dtype
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)
        self.base = base = load_base(cfg.base, "cpu", dtype=dt)
        base.vae.to(torch.float32)  # SDXL's VAE overflows in fp16, and it encodes each image once
        fam = get_family(base.family)
        spec = fam.training
        if cfg.family and cfg.family != base.family:
            from app.training.config import ConfigError

            raise ConfigError(f"this preset is for {get_family(cfg.family).title} models, but "
                              f"{pathlib.Path(cfg.base).name} is a {fam.title} model: choose the {spec.preset} "
                              "preset (or another of its family)")
        for warning in base.warnings:  # e.g. the SD 2.x v-prediction assumption: the loss target follows it
            self.log(f"warning: {warning}")
        model_key = _digest(f"{fingerprint(base.source)}|{base.family}|{self.precision}")  # fp16 encoders differ
        self.base_hash = model_key[:10]
        from app.paths import cache_dir

        folder = pathlib.Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_dir() / "training"
        self.cache = EmbeddingCache(base, folder, self.device, model_key, persist=cfg.cache_latents)

        torch.manual_seed(cfg.seed)
        dora = cfg.network == "dora"
        self._store_base(torch, fam)
        self.unet_targets = adapters.denoiser_targets(spec, cfg.targets, cfg.blocks, fam.title)
        self.te_targets = adapters.target_modules("te", cfg.targets)
        adapters.add_adapter(base.denoiser, rank=cfg.rank, alpha=cfg.alpha, targets=self.unet_targets, dora=dora)
        trainable = [getattr(base.pipe, s, None) for s in spec.encoders]
        self.trained_tes = [te for te in trainable if te is not None] if cfg.train_text_encoder else []
        if cfg.train_text_encoder and not self.trained_tes:
            self.log(f"warning: train_text_encoder is ignored: {fam.title}'s text encoders stay frozen")
        for te in self.trained_tes:
            adapters.add_adapter(te, rank=cfg.rank, alpha=cfg.alpha, targets=self.te_targets, dora=dora)
        for te in base.text_encoders:
            if te not in self.trained_tes:
                te.requires_grad_(False)
        base.vae.requires_grad_(False)
        for m in [base.denoiser, *self.trained_tes]:  # adapters train in float32 over the frozen dtype
            for p in m.parameters():
                if p.requires_grad and p.dtype != torch.float32:
                    p.data = p.data.float()
        self.progress(Progress(0, 0, phase=f"moving the model to {self.device}"))
        for m in [base.denoiser, base.vae, *base.text_encoders]:  # after fp8/NF4 storage: the small form moves
            m.to(self.device)
        if cfg.gradient_checkpointing:
            base.denoiser.enable_gradient_checkpointing()
            for te in self.trained_tes:
                te.gradient_checkpointing_enable()
        base.denoiser.train()
        for te in self.trained_tes:
            te.train()

        self.optimizer, self.optimizer_name = self._optimizer(torch)
        self.batches_per_epoch = len(self._plan(0))
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * self.batches_per_epoch / cfg.grad_accum)
        from diffusers.optimization import get_scheduler

        from app.training.objectives import objective_for

        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.warmup_steps,
                                          num_training_steps=self.total_steps)
        self.objective = objective_for(self)
        self.prediction_type = self.objective.prediction_type
        self.log(f"{fam.title}: {self.objective.describe()}")
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self._parked = False
        if cfg.caption_dropout > 0 and not self.trained_tes:
            self.cache.text("")  # cached up front: dropout may first strike after the encoders are parked
        if self.dist is not None and self.rank != 0:
            self.dist.barrier()  # rank 0 encodes and writes the cache first; the others then read it
        self._precache()
        if self.dist is not None and self.rank == 0:
            self.dist.barrier()
        self.log(f"{cfg.network.upper()} rank {cfg.rank}, alpha {cfg.alpha:g}: effective scale {cfg.scale:g} "
                 f"(alpha/rank; learning rates transfer between tools only at the same scale)")
        self.log(f"{self.total_steps} steps, {self.batches_per_epoch} batches per epoch, batch {cfg.batch_size} "
                 f"x {cfg.grad_accum} accumulation, on {self.device} ({self.precision} mixed precision)")

    def _precache(self) -> None:
        """Encode every image (and, with frozen text encoders, every caption) once before the first
        step, then move the VAE and the frozen encoders off the device: Flux's T5 alone is 9.5 GB,
        which the transformer's training step needs more than an encoder it will not call again."""
        items = self.dataset.items
        for i, it in enumerate(items):
            self.progress(Progress(i, len(items), phase=f"caching latents and text embeddings {i + 1}/{len(items)}"))
            self.cache.latent(it)
            if not self.trained_tes:
                self.cache.text(it.caption)
        self._park_encoders()

    def _store_base(self, torch: Any, fam: Any) -> None:
        """The frozen denoiser's storage: fp8 weights (compute in the training dtype) or NF4 (CUDA,
        bitsandbytes), chosen before the adapter is injected so only the base layers are stored small."""
        mode = self.cfg.base_precision
        if mode in ("auto", "full"):
            return
        den = self.base.denoiser
        if mode == "fp8":
            compute = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)
            from app.engine.memory_modes import cast_fp8

            cast_fp8(den, compute)
            self.log(f"{fam.title}: frozen base stored in fp8, computed in {str(compute).replace('torch.', '')}")
            return
        if not self.device.startswith("cuda"):
            raise ValueError(f"base_precision nf4 needs a CUDA GPU (bitsandbytes); this run is on {self.device}: "
                             "use fp8 or full")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ValueError("base_precision nf4 needs bitsandbytes: `pip install bitsandbytes`") from None
        from app.engine.quantize import quantize_nf4

        quantize_nf4(den, self.device)
        self.log(f"{fam.title}: frozen base quantized to NF4 (bitsandbytes)")

    def _first_step_oom(self, exc: BaseException) -> RuntimeError:
        """One line for an out-of-memory on the first step, with the cheaper settings to try."""
        cfg = self.cfg
        fam = get_family(self.base.family)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        tips = []
        if fam.training.preset and cfg.base_precision != "fp8" and fam.denoiser != "unet":
            tips.append(f"the {fam.training.preset} preset (fp8 base)")
        if not cfg.gradient_checkpointing:
            tips.append("gradient_checkpointing = true")
        if cfg.batch_size > 1:
            tips.append("batch_size 1 with grad_accum")
        tips.append(f"a lower resolution than {cfg.resolution}")
        return RuntimeError(f"out of memory on the first step on {self.device} ({first}): try " + ", ".join(tips)
                            + "; nothing was saved")

    def autocast(self) -> Any:
        import torch

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        return torch.autocast(self.device.split(":")[0], dtype=dtype, enabled=dtype is not None)

    def _precision(self, torch: Any) -> str:
        mp = self.cfg.mixed_precision
        if not self.device.startswith("cuda"):
            return "no"
        if mp == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return mp

    def _optimizer(self, torch: Any) -> tuple[Any, str]:
        cfg = self.cfg
        groups = [{"params": adapters.trainable_parameters(self.base.denoiser), "lr": cfg.learning_rate}]
        te_params = [p for te in self.trained_tes for p in adapters.trainable_parameters(te)]
        if te_params:
            groups.append({"params": te_params, "lr": cfg.text_encoder_lr})
        if cfg.optimizer == "adamw8bit":
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit(groups, weight_decay=cfg.weight_decay), "bitsandbytes.optim.AdamW8bit"
            except ImportError:
                self.log("warning: optimizer adamw8bit needs bitsandbytes, which is not installed; using AdamW")
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay), "torch.optim.AdamW"

    # data order --------------------------------------------------------------------------------
    def _plan(self, epoch: int) -> list[list[int]]:
        """Batches of item indices for `epoch`: one bucket per batch, shuffled by (seed, epoch)."""
        plan = self._plans.get(epoch)
        if plan is not None:
            return plan
        import torch

        g = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i, it in enumerate(self.dataset.items):
            by_bucket.setdefault(it.bucket, []).extend([i] * it.repeats)
        batches = []
        for bucket in sorted(by_bucket):
            idx = by_bucket[bucket]
            order = torch.randperm(len(idx), generator=g).tolist()
            shuffled = [idx[j] for j in order]
            bs = self.cfg.batch_size * self.cfg.gpus  # the global batch
            batches += [shuffled[k:k + bs] for k in range(0, len(shuffled), bs)]
        order = torch.randperm(len(batches), generator=g).tolist()
        plan = [batches[j] for j in order]
        self._plans = {epoch: plan}
        return plan

    def _micro_batch(self, m: int) -> tuple[int, list[int]]:
        epoch, idx = divmod(m, self.batches_per_epoch)
        return epoch, self._plan(epoch)[idx]

    # one step ----------------------------------------------------------------------------------
    def _loss(self, batch: list[int], g: Any, shard: Any = None) -> Any:
        """The batch's loss under the family's objective (caption dropout drawn first, from `g`);
        `shard`: `batch` is these positions of a global batch of that size (see `objectives.rows`)."""
        import torch

        cfg, dev = self.cfg, self.device
        fam = get_family(self.base.family)
        items = [self.dataset.items[i] for i in batch]
        latents = torch.stack([self.cache.latent(it) for it in items]).to(dev)
        bsz = latents.shape[0]
        captions = [it.caption for it in items]
        if cfg.caption_dropout > 0:
            from app.training.objectives import rows

            drop = (rows(lambda n: torch.rand(n, generator=g), bsz, shard) < cfg.caption_dropout).tolist()
            captions = ["" if d else c for c, d in zip(captions, drop, strict=True)]
        if self.trained_tes:
            emb = self.cache.encode_text(captions, grad=True)
        else:
            emb = {k: v.to(dev) for k, v in fam.collate_text([self.cache.text(c) for c in captions]).items()}
        if shard is None:
            return self.objective.loss(latents, emb, items, g)
        return self.objective.loss(latents, emb, items, g, shard)

    def validation_loss(self, seed: int = 0, rounds: int = 4) -> float:
        """Mean loss over every image with fixed noise and timesteps: comparable across steps."""
        import torch

        if self.base is None:
            self.prepare()
        g = torch.Generator().manual_seed(seed)
        n_items = len(self.dataset.items)
        total, count = 0.0, 0
        with torch.no_grad():
            for _ in range(rounds):
                for i in range(n_items):
                    total += float(self._loss([i], g))
                    count += 1
        return total / max(1, count)

    # run ---------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainResult:
        """Train to the last step and export; raises TrainingStopped (after a checkpoint) if stopped."""
        import torch

        if self.base is None:
            self.prepare()
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed)
        step, losses = 0, []
        self.session_id = uuid.uuid4().hex[:16]
        self.started_at = time.time()
        if resume:
            step, losses = self._resume(g)
        self.step = step
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.dist is not None:
            self.dist.broadcast(params)  # every process starts from rank 0's weights
        result = TrainResult(None, None, step, self.total_steps, losses)
        t0 = time.perf_counter()
        first_step = step
        epoch_started, epoch_now = time.perf_counter(), None
        while step < self.total_steps:
            if self._stopping():
                result.checkpoint = self._save(step, g, losses)
                result.steps = step
                if self.dist is not None:
                    self.dist.barrier()  # the others wait for rank 0's checkpoint
                raise TrainingStopped(result)
            ts = time.perf_counter()
            total = 0.0
            for micro in range(cfg.grad_accum):
                epoch, batch = self._micro_batch(step * cfg.grad_accum + micro)
                if epoch_now is not None and epoch != epoch_now:
                    now = time.perf_counter()
                    result.epoch_times.append(now - epoch_started)
                    self._park_encoders()
                    epoch_started = time.perf_counter()
                epoch_now = epoch
                try:
                    if self.dist is None:
                        loss = self._loss(batch, g) / cfg.grad_accum
                    else:
                        loss = self._shard_loss(batch, g) / cfg.grad_accum
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                    else:
                        loss.backward()
                except Exception as exc:
                    if step == first_step and _is_oom(exc):
                        raise self._first_step_oom(exc) from None
                    raise
                total += float(loss.detach())
            if self.dist is not None:
                total = self.dist.all_reduce_grads(params, total)  # summed: the global batch's mean
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            step += 1
            self.step = step
            losses.append(total)
            result.step_times.append(time.perf_counter() - ts)
            elapsed = time.perf_counter() - t0
            rate = elapsed / max(1, step - first_step)
            recent = losses[-20:]
            self.progress(Progress(step, self.total_steps, total, sum(recent) / len(recent),
                                   self.lr_scheduler.get_last_lr()[0], elapsed, rate * (self.total_steps - step),
                                   epoch_now or 0))
            if cfg.save_every and step % cfg.save_every == 0 and step < self.total_steps:
                result.checkpoint = self._save(step, g, losses)
            if cfg.sample_every and step % cfg.sample_every == 0:
                result.samples += self._samples(step)
        if epoch_now is not None:
            result.epoch_times.append(time.perf_counter() - epoch_started)
        result.steps = step
        result.checkpoint = self._save(step, g, losses)
        if self.rank == 0:
            result.lora, result.peft = self.export(self.out_path, step, losses)
            self.log(f"saved {result.lora}{f' (and {result.peft.name})' if result.peft else ''} after {step} steps")
        if self.dist is not None:
            self.dist.barrier()  # the others wait for rank 0's files
        return result

    def _stopping(self) -> bool:
        """Stop requested: here, or (data-parallel) in any process, so all stop at the same step."""
        if self.dist is None:
            return self.stop.is_set()
        return self.dist.any(self.stop.is_set())

    def _shard_loss(self, batch: list[int], g: Any) -> Any:
        """This process's part of the global batch's mean loss: its items r, r+N, ... weighted by
        their share, so the gradients summed over the processes are those of the whole batch. A
        process whose share is empty (a bucket's short last batch) runs one item at weight 0: it
        still draws the batch's noise, and its gradients exist for the sum."""
        world = self.dist.world
        positions = list(range(self.rank, len(batch), world))
        weight = len(positions) / len(batch)
        if not positions:
            positions = [0]
        loss = self._loss([batch[p] for p in positions], g, (positions, len(batch)))
        return loss * weight

    def close(self) -> None:
        """Free the model copy, optimizer state and cached latents now, and return the GPU memory:
        a workflow samples with the base right after training. Collected explicitly because
        callbacks (a node's `on_samples`) usually close over the trainer, a reference cycle."""
        import gc

        from app.engine.devices import release_memory

        self.base = self.cache = self.optimizer = self.lr_scheduler = self.scaler = None
        self.on_samples = None
        gc.collect()
        if getattr(self, "device", "cpu") != "cpu":
            release_memory(self.device)

    def _park_encoders(self, to: str = "cpu") -> None:
        """Once every latent and caption is cached (before the first step): move the VAE and the
        frozen text encoders off the training device (a few GB for SDXL, ~10 GB for Flux). They
        still encode there if a run meets an uncached caption, only slower; samples bring them
        back for a moment."""
        import torch

        if self._parked:
            return
        self._parked = True
        self._move_encoders(to)
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _move_encoders(self, device: str) -> None:
        self.base.vae.to(device)
        for te in self.base.text_encoders:
            if te not in self.trained_tes:
                te.to(device)

    def _rng_state(self, g: Any) -> dict[str, Any]:
        import torch

        state = {"noise": g.get_state(), "torch": torch.get_rng_state()}
        if self.device.startswith("cuda"):
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def _save(self, step: int, g: Any, losses: list[float]) -> pathlib.Path:
        if self.rank != 0:  # data-parallel: rank 0 alone writes (the weights are the same everywhere)
            return checkpoint.step_folder(self.checkpoint_root, step)
        tensors = {}
        for prefix, model in self._trained_models():
            tensors.update({f"{prefix}.{k}": v for k, v in adapters.adapter_tensors(model).items()})
        folder = checkpoint.save(
            self.checkpoint_root, step, adapter=tensors, optimizer=self.optimizer, scheduler=self.lr_scheduler,
            scaler=self.scaler, rng=self._rng_state(g),
            state={"config": self.cfg.to_dict(), "total_steps": self.total_steps, "losses": losses,
                   "session_id": self.session_id, "started_at": self.started_at})
        self.export(folder / "lora.safetensors", step, losses, twin=False)
        self.log(f"checkpoint: {folder}")
        return folder

    def _resume(self, g: Any) -> tuple[int, list[float]]:
        import torch

        ck = checkpoint.latest(self.checkpoint_root)
        if ck is None:
            raise checkpoint.CheckpointError(f"--resume: no checkpoint in {self.checkpoint_root}")
        state = checkpoint.read_state(ck)
        checkpoint.check_compatible(state, self.cfg.to_dict(), ck.folder)
        tensors, rng = checkpoint.load(ck, optimizer=self.optimizer, scheduler=self.lr_scheduler, scaler=self.scaler)
        for prefix, model in self._trained_models():
            own = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            adapters.load_adapter_tensors(model, own)
        g.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(rng["cuda"])
        self.session_id = state.get("session_id", self.session_id)
        self.started_at = state.get("started_at", self.started_at)
        self.log(f"resumed from {ck.folder} (step {ck.step}/{self.total_steps})")
        return ck.step, list(state.get("losses", []))[:ck.step]

    def _trained_models(self) -> list[tuple[str, Any]]:
        return [("unet", self.base.denoiser)] + [(f"te{i}", te) for i, te in enumerate(self.trained_tes)]

    def _samples(self, step: int) -> list[pathlib.Path]:
        from app.training.samples import render_samples

        if self.rank != 0:
            return []
        prompts = list(self.cfg.sample_prompts) or [self.cfg.trigger or self.dataset.items[0].caption]
        size = self.cfg.sample_size or self.cfg.resolution
        self.progress(Progress(step, self.total_steps, phase="rendering samples"))
        if self._parked:
            self._move_encoders(self.device)
        try:
            paths = render_samples(self.base.pipe, prompts, seed=self.cfg.sample_seed, steps=self.cfg.sample_steps,
                                   size=(size, size), folder=self.checkpoint_root / "samples", step=step,
                                   device=self.device, family=self.base.family)
        finally:
            if self._parked:
                self._move_encoders("cpu")
        if self.on_samples is not None and paths:
            self.on_samples(paths)
        return paths

    # export ------------------------------------------------------------------------------------
    def adapter_export(self) -> Any:
        from app.training.export import AdapterExport

        fam = get_family(self.base.family)
        if fam.denoiser != "unet":
            from app.training.export_dit import DitAdapterExport

            den = self.base.denoiser
            slots = [s for s in fam.training.encoders if getattr(self.base.pipe, s, None) in self.trained_tes]
            return DitAdapterExport(
                family=self.base.family, denoiser=adapters.layer_weights(den), denoiser_config=dict(den.config),
                text_encoders={s: adapters.layer_weights(getattr(self.base.pipe, s)) for s in slots})
        unet = self.base.unet
        return AdapterExport(
            family=self.base.family, unet=adapters.layer_weights(unet),
            text_encoders=[adapters.layer_weights(te) for te in self.trained_tes],
            layers_per_block=int(unet.config.layers_per_block), up_block_types=tuple(unet.config.up_block_types),
            targets={"unet": self.unet_targets, "te": self.te_targets})

    def export(self, path: pathlib.Path, step: int, losses: list[float],
               twin: bool = True) -> tuple[pathlib.Path, pathlib.Path | None]:
        from app.training.export import export_lora, forms_for, write_safetensors
        from app.training.metadata import training_metadata

        meta = training_metadata(
            self.cfg, self.dataset, family=self.base.family, steps=step,
            epoch=(step * self.cfg.grad_accum) // max(1, self.batches_per_epoch), total_steps=self.total_steps,
            batches_per_epoch=self.batches_per_epoch, session_id=self.session_id, started_at=self.started_at,
            base_name=pathlib.Path(self.cfg.base).name, base_hash=self.base_hash, optimizer=self.optimizer_name,
            precision=self.precision, prediction_type=self.prediction_type,
            final_loss=sum(losses[-20:]) / len(losses[-20:]) if losses else None)
        meta |= self.extra_metadata
        a = self.adapter_export()
        if not twin:
            write_safetensors(path, forms_for(a)[0](a), meta)
            return path, None
        return export_lora(a, path, meta, log=self.log)


def _is_oom(exc: BaseException) -> bool:
    from app.engine.devices import is_oom

    return is_oom(exc)


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()

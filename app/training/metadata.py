"""Training metadata for the exported file: kohya `ss_*` and `modelspec.*` keys, all strings.

A1111's and ComfyUI's LoRA browsers, and civitai, read these: network dim/alpha/module, base
model version, resolution, steps, learning rate, tag frequency, session id; modelspec gives the
architecture, title, trigger phrase and resolution. The content hash is added by the writer.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from app.engine.families import get_family
from app.training.config import TrainConfig
from app.training.dataset import Dataset


def training_metadata(cfg: TrainConfig, ds: Dataset, *, family: str, steps: int, epoch: int,
                      total_steps: int, batches_per_epoch: int, session_id: str, started_at: float,
                      base_name: str, base_hash: str, optimizer: str, precision: str,
                      prediction_type: str, final_loss: float | None) -> dict[str, str]:
    """Every value a string, as safetensors metadata must be."""
    dora = cfg.network == "dora"
    spec = get_family(family).training
    buckets = {str(i): {"resolution": [w, h], "count": c}
               for i, ((w, h), c) in enumerate(sorted(ds.buckets().items()))}
    dirs: dict[str, dict[str, int]] = {}
    for it in ds.items:
        d = dirs.setdefault(it.folder, {"n_repeats": it.repeats, "img_count": 0})
        d["img_count"] += 1
    title = cfg.title or (cfg.out and _stem(cfg.out)) or "imagebash LoRA"
    now = dt.datetime.now(dt.timezone.utc)
    meta: dict[str, Any] = {
        "ss_session_id": session_id,
        "ss_training_started_at": f"{started_at:.0f}",
        "ss_training_finished_at": f"{now.timestamp():.0f}",
        "ss_output_name": title,
        "ss_sd_model_name": base_name,
        "imagebash.base_fingerprint": base_hash,
        "ss_base_model_version": spec.base_version,
        "ss_v2": str(spec.v2),
        "ss_network_module": "lycoris.kohya" if dora else "networks.lora",
        "ss_network_dim": str(cfg.rank),
        "ss_network_alpha": f"{cfg.alpha:g}",
        "ss_network_args": json.dumps({"algo": "lora", "dora_wd": "True", "wd_on_out": "False"} if dora else {}),
        "ss_network_dropout": "0",
        "ss_learning_rate": f"{cfg.learning_rate:g}",
        "ss_unet_lr": f"{cfg.learning_rate:g}",
        "ss_text_encoder_lr": f"{cfg.text_encoder_lr:g}" if cfg.train_text_encoder else "0",
        "ss_network_train_unet_only": str(not cfg.train_text_encoder),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": str(cfg.warmup_steps),
        "ss_optimizer": optimizer,
        "ss_max_train_steps": str(total_steps),
        "ss_steps": str(steps),
        "ss_epoch": str(epoch),
        "ss_num_epochs": str(max(1, -(-total_steps * cfg.grad_accum // max(1, batches_per_epoch)))),
        "ss_num_batches_per_epoch": str(batches_per_epoch),
        "ss_num_train_images": str(ds.num_images_with_repeats),
        "ss_num_reg_images": "0",
        "ss_batch_size_per_device": str(cfg.batch_size),
        "ss_total_batch_size": str(cfg.batch_size * cfg.gpus * cfg.grad_accum),
        "ss_gradient_accumulation_steps": str(cfg.grad_accum),
        "ss_gradient_checkpointing": str(cfg.gradient_checkpointing),
        "ss_mixed_precision": precision,
        "ss_full_fp16": "False",
        "ss_resolution": f"({cfg.resolution}, {cfg.resolution})",
        "ss_enable_bucket": "True",
        "ss_min_bucket_reso": str(max(64, cfg.resolution // 2 // 64 * 64)),
        "ss_max_bucket_reso": str(cfg.resolution * 2),
        "ss_bucket_no_upscale": "False",
        "ss_bucket_info": json.dumps({"buckets": buckets, "mean_img_ar_error": 0.0}),
        "ss_tag_frequency": json.dumps(ds.tag_frequency()),
        "ss_dataset_dirs": json.dumps(dirs),
        "ss_caption_dropout_rate": f"{cfg.caption_dropout:g}",
        "ss_noise_offset": f"{cfg.noise_offset:g}",
        "ss_min_snr_gamma": f"{cfg.min_snr_gamma:g}" if cfg.min_snr_gamma else "None",
        "ss_seed": str(cfg.seed),
        "ss_clip_skip": "None",
        "ss_keep_tokens": "1" if cfg.trigger else "0",
        "ss_cache_latents": str(cfg.cache_latents),
        "ss_training_comment": f"trained with imagebash; effective scale alpha/rank = {cfg.scale:g}",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{spec.architecture}/{'lora' if not dora else 'lycoris'}",
        "modelspec.implementation": spec.implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{cfg.resolution}x{cfg.resolution}",
        "modelspec.trigger_phrase": cfg.trigger,
        "modelspec.prediction_type": {"v_prediction": "v", "flow": "flow"}.get(prediction_type, "epsilon"),
        "modelspec.date": now.strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.description": f"{'DoRA' if dora else 'LoRA'} rank {cfg.rank}, alpha {cfg.alpha:g} "
                                 f"(scale {cfg.scale:g}), {steps} steps",
        "imagebash.effective_scale": f"{cfg.scale:g}",
        "imagebash.dora_axis": "input" if dora else "",
        "imagebash.final_loss": "" if final_loss is None else f"{final_loss:.6f}",
    }
    return {k: str(v) for k, v in meta.items() if v != ""}


def _stem(path: str) -> str:
    import pathlib

    return pathlib.Path(path).stem

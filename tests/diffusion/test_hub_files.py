"""Which files a hub download fetches: one weight variant per component, nothing else heavy (no network)."""

from __future__ import annotations

from app.engine.models import hub_files

# stabilityai/stable-diffusion-xl-base-1.0 as listed on the hub (~30 GB with every file)
SDXL_FILES = """.gitattributes 01.png LICENSE.md README.md comparison.png model_index.json pipeline.png
sd_xl_base_1.0.safetensors sd_xl_base_1.0_0.9vae.safetensors sd_xl_offset_example-lora_1.0.safetensors
scheduler/scheduler_config.json
text_encoder/config.json text_encoder/flax_model.msgpack text_encoder/model.fp16.safetensors
text_encoder/model.onnx text_encoder/model.safetensors text_encoder/openvino_model.bin
text_encoder/openvino_model.xml
text_encoder_2/config.json text_encoder_2/flax_model.msgpack text_encoder_2/model.fp16.safetensors
text_encoder_2/model.onnx text_encoder_2/model.onnx_data text_encoder_2/model.safetensors
text_encoder_2/openvino_model.bin text_encoder_2/openvino_model.xml
tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json tokenizer/vocab.json
tokenizer_2/merges.txt tokenizer_2/special_tokens_map.json tokenizer_2/tokenizer_config.json tokenizer_2/vocab.json
unet/config.json unet/diffusion_flax_model.msgpack unet/diffusion_pytorch_model.fp16.safetensors
unet/diffusion_pytorch_model.onnx unet/diffusion_pytorch_model.safetensors unet/model.onnx_data
unet/openvino_model.bin unet/openvino_model.xml
vae/config.json vae/diffusion_flax_model.msgpack vae/diffusion_pytorch_model.fp16.safetensors
vae/diffusion_pytorch_model.safetensors
vae_1_0/config.json vae_1_0/diffusion_pytorch_model.fp16.safetensors vae_1_0/diffusion_pytorch_model.safetensors
vae_decoder/config.json vae_decoder/model.onnx vae_decoder/openvino_model.bin vae_decoder/openvino_model.xml
vae_encoder/config.json vae_encoder/model.onnx vae_encoder/openvino_model.bin vae_encoder/openvino_model.xml
""".split()

SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0.dev0",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}

COMMON = {"model_index.json", "scheduler/scheduler_config.json",
          "text_encoder/config.json", "text_encoder_2/config.json", "unet/config.json", "vae/config.json",
          *(f"{t}/{n}" for t in ("tokenizer", "tokenizer_2")
            for n in ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"))}


def test_half_precision_fetches_only_the_fp16_weights():
    files, variant = hub_files(SDXL_FILES, SDXL_INDEX, half=True)
    assert variant == "fp16"
    assert set(files) == COMMON | {"text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors",
                                   "unet/diffusion_pytorch_model.fp16.safetensors",
                                   "vae/diffusion_pytorch_model.fp16.safetensors"}


def test_full_precision_fetches_only_the_plain_weights():
    files, variant = hub_files(SDXL_FILES, SDXL_INDEX, half=False)
    assert variant == ""
    assert set(files) == COMMON | {"text_encoder/model.safetensors", "text_encoder_2/model.safetensors",
                                   "unet/diffusion_pytorch_model.safetensors",
                                   "vae/diffusion_pytorch_model.safetensors"}
    assert not any(f.startswith(("vae_1_0/", "vae_decoder/")) or ("/" not in f and f != "model_index.json")
                   for f in files)


def test_sharded_weights_keep_their_index_and_a_repo_without_fp16_gets_plain():
    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors.index.json",
             "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
             "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
             "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
             "vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.bin"]
    index = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "safety_checker": [None, None]}
    chosen, variant = hub_files(files, index, half=True)
    assert variant == ""  # the UNet has no fp16 variant: every component loads the plain weights
    assert set(chosen) == set(files) - {"vae/diffusion_pytorch_model.fp16.safetensors",
                                        "vae/diffusion_pytorch_model.bin"}

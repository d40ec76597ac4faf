"""LoRA / DoRA training: a folder of images in, a kohya-format and a peft-format file out.

`dataset` scans images and captions into buckets, `cache` keeps latents and text embeddings,
`adapters` puts peft LoRA / input-axis DoRA layers on the models, `loop` trains with resumable
`checkpoint`s and `samples`, `export` and `metadata` write the files, `config` holds the
settings and presets, `cli` adds `imagebash train-lora`. The Train LoRA node is `nodes.training`.
"""

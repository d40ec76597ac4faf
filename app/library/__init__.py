"""The model library: what is in the models folders (scan), getting models (download), and what a
workflow needs that is not there (missing).

- `scan.py`: every model file in the models folders (ours and an existing ComfyUI / A1111 install),
  with kind, family and variant read from the weights, size, sha256 (computed once, cached),
  `ss_*` trigger words and tags, the `NAME.preview.png` sidecar, licence, and where it is used.
- `download.py`, `sources.py`, `starters.py`: the Hugging Face Hub (through huggingface_hub),
  direct URLs and Civitai model versions, resumable and hash-checked, into the right folder.
- `missing.py`: the model references of a graph whose files are absent, with a known source.
- `cli.py`: `imagebash models list|info|download|verify|remove`.
"""

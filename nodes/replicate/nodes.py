"""The Replicate Run node: any model on Replicate as a node whose ports come from its schema.

The node's only fixed parameter is the model reference; everything else (prompt, sizes,
enums, seed, image inputs) is derived from the model's input schema through the registry's
`dynamic_inputs` hook (`SchemaInputs`, which also says why when the schema cannot be read) and
arrives in `**inputs`. The node is io-bound (`io=True`), so several run at once next to local
GPU work; its result is cached by the engine like any node's, so an unchanged node does not
call the API (or cost anything) again on a re-run.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, NamedTuple

import numpy as np

from nodes.registry import PortSpec, node
from nodes.replicate import download, schema, upload
from nodes.replicate.client import Limits, Prediction, ReplicateNodeError, base_url, get_client
from nodes.types import Context, Help, Image, Video


class ReplicateOutputs(NamedTuple):
    """An image output (a batch when the model gives several; a Video's frames for a video),
    the video (an image batch plays as frames) and the text (or the output URLs)."""

    image: Image
    video: Video
    text: str


def schema_ports(ref: str, params: dict[str, Any], fixed: set[str] = frozenset()) -> list[PortSpec]:
    """The schema's ports for `ref`; ports for the saved values when the schema is unavailable."""
    ref = (ref or "").strip()
    if not ref:
        return []
    try:
        doc = schema.load_schema(ref)
    except ReplicateNodeError:
        return schema.inferred_ports(params, {"model", *fixed})
    return [p for p in schema.ports_from_schema(ref, doc) if p.name not in fixed]


class SchemaInputs:
    """A Replicate node's `dynamic_inputs`: the ports of its model's schema.

    `model` is a preset's fixed reference; without it the node's `model` parameter names the
    model. When the schema cannot be read the ports are those of the saved values (so the
    workflow still loads), and `unavailable(params)` says why, in one line naming the model and
    the cause (e.g. the token refused, 401), for validation to report when a link goes to a port
    the node cannot show; a run of the node fails with the same line.
    """

    def __init__(self, model: str | None = None, fixed: frozenset[str] | set[str] = frozenset()) -> None:
        self.model = model
        self.fixed = frozenset(fixed)

    def ref(self, params: dict[str, Any]) -> str:
        return (self.model if self.model is not None else str(params.get("model") or "")).strip()

    def __call__(self, params: dict[str, Any]) -> list[PortSpec]:
        return schema_ports(self.ref(params), params, self.fixed)

    def unavailable(self, params: dict[str, Any]) -> str | None:
        """Why the schema's ports cannot be had right now (one line), or None when they can."""
        return schema.unavailable(self.ref(params))


def _api_value(client: Any, doc: dict, name: str, value: Any, *, ref: str, limits: Limits,
               cancel: Any) -> Any:
    if isinstance(value, (np.ndarray, Video)):
        item = schema.array_item_type(doc, name)
        return upload.encode_input(client, value, schema.api_name(name), model=ref, limits=limits,
                                   cancel=cancel, as_list=item is not None)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    item = schema.array_item_type(doc, name)
    if item is not None and isinstance(value, str):
        parts = [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]
        cast = {"integer": int, "number": float}.get(item, str)
        try:
            return [cast(p) for p in parts]
        except ValueError:
            raise ReplicateNodeError(f"Replicate {ref}: input '{name}' takes a list of {item}s, "
                                     f"got {value!r}") from None
    return value


def run_model(ctx: Context, ref: str, inputs: dict[str, Any]) -> ReplicateOutputs:
    """Run `ref` with `inputs` (port name -> value) and decode what it returns."""
    ref = (ref or "").strip()
    settings = getattr(ctx, "settings", None)
    limits = Limits.from_settings(settings)
    cancel = getattr(ctx, "cancel_event", None)
    try:
        client = get_client(settings)
    except ReplicateNodeError as exc:
        raise ReplicateNodeError(f"Replicate {ref}: {exc}") from None
    doc = schema.load_schema(ref, settings)
    ctx.progress(0.0, text="preparing inputs")
    api_input = {}
    for name, value in inputs.items():
        if value is None:
            continue
        api_input[schema.api_name(name)] = _api_value(client, doc, name, value, ref=ref, limits=limits,
                                                      cancel=cancel)
    last = [0.0]

    def on_status(text: str, fraction: float | None) -> None:
        if fraction is not None:
            last[0] = fraction
        ctx.progress(last[0], text=text)

    pred = Prediction(client, ref, limits, cancel=cancel, on_status=on_status,
                      latest_version=lambda: doc.get("version"))
    pred.create(api_input)
    result = pred.wait()
    ctx.annotate("replicate", {"model": ref, "version": doc.get("version"), "prediction": result.id})
    ctx.progress(1.0, text="downloading results")
    outs = download.collect(result.output, client, model=ref, limits=limits, api_base=base_url(settings),
                            cancel=cancel, text_only=download.is_text_output(doc.get("output")))
    image: Any = download.image_batch(outs.images)
    video: Any = outs.videos[0] if outs.videos else None
    if image is None and video is not None:
        image = video
    if video is None and image is not None:
        video = Video.from_batch(image)
    text = "".join(outs.texts) if outs.texts else "\n".join(outs.urls)
    if image is None and not text:
        raise ReplicateNodeError(f"Replicate {ref}: the prediction succeeded but returned no output")
    return ReplicateOutputs(image, video, text)


@node("imagebash.replicate.run", version=1, title="Replicate Run", category="online/replicate",
      io=True, dynamic_inputs=SchemaInputs())
def replicate_run(ctx: Context,
                  model: Annotated[str, Help("owner/name or owner/name:version")] = "black-forest-labs/flux-schnell",
                  **inputs: Any) -> ReplicateOutputs:
    """Run any model on Replicate; its inputs become ports, read from the model's schema.

    Graph images are uploaded (small ones inline), results come back as images, a video or
    text. Needs a Replicate API token (REPLICATE_API_TOKEN or Settings).

    Args:
        model: The model on Replicate, as owner/name (its latest version) or owner/name:version.
    """
    return run_model(ctx, model, inputs)

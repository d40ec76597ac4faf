"""ComfyUI workflows in and out: read every form a ComfyUI user has (formats), turn them into
imagebash graphs (mapping), and write ComfyUI's API format back (export).

- `model.py`: the normalised workflow both sides share (ComfyWorkflow / ComfyNode / ComfyLink).
- `formats.py`, `widgets.py`: API ("prompt") JSON, UI (litegraph) JSON with its widget rules,
  PNG text chunks, WebP EXIF, A1111 infotext -> ComfyWorkflow. A workflow file is data: nothing
  in it is ever executed.
- `mapping.py`: ComfyWorkflow -> imagebash Graph; what has no equivalent becomes a visible
  `imagebash.comfy.unmapped` placeholder that keeps its class, inputs, widgets and links.
"""

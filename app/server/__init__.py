"""`imagebash serve`: the engine behind an HTTP + WebSocket API, for a desktop on a laptop that
runs its workflows on a rented GPU box (a Runpod pod, a Lambda instance).

The wire protocol is `app.engine.protocol` (shared with the client, `app.engine.remote`); this
package is its server half, one job per module:

- `auth`: the bearer token (made once, kept 0600 in the data dir) and the check on every route;
- `db`: the SQLite file (WAL) that jobs, their event log and remembered hashes live in;
- `hub`: the event log with its global `seq`, and the fan-out to WebSocket subscribers;
- `blobs`: the content-addressed store, resumable uploads, trees, and blob/tree references;
- `jobs`: the job store and the worker that runs them one at a time on the engine;
- `models_api`: the server's checkpoints and LoRAs, and adopting an uploaded LoRA;
- `state`: everything above wired to one engine; `app`: the FastAPI routes; `cli`: `serve`.

Nothing here imports PySide6, and torch only where a route or the engine needs it.
"""

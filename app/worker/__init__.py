"""The speech worker: a child process that keeps the model warm, and the GUI's clients for it.

- `protocol`: the frame format both sides share (stdlib + numpy only); docs/protocol.md has the messages.
- `server`: the worker itself (`python -m app worker`); `engine_slot`: its one warm engine, with the
  out-of-memory step-down. Engines (and so torch) are imported only when a model is loaded.
- `client`: the Qt client the GUI uses (restarts a dead worker, re-submits its jobs).
- `pipe`: a synchronous client for tests, benchmarks and scripts; `launch`: the worker command line.

Nothing is imported here, so importing `app.worker.protocol` pulls in neither Qt nor torch.
"""

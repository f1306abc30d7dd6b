"""The speech worker: a child process that keeps the model warm, and the GUI's clients for it.

- `protocol`: the frame format both sides share (stdlib + numpy only).
- `server`: the worker itself (`python -m app worker`), the only module here that loads engines.
- `client`: the Qt client the GUI uses (restarts a dead worker, re-submits its jobs).
- `pipe`: a synchronous client for tests, benchmarks and scripts.

Nothing is imported here, so importing `app.worker.protocol` pulls in neither Qt nor torch.
"""

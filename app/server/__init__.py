"""A shared speech server with an OpenAI-compatible API (`python -m app serve`), and the app as its client.

Server side (imports FastAPI; never imported by the GUI): `app_factory` builds the routes,
`request_checks` checks a request field by field, `api_errors` is OpenAI's error shape, `batching`
holds the bounded queue in front of the one engine, `auth` the bearer token, `serve` the command
line entry.
Client side (torch- and FastAPI-free, imported by the GUI): `client` is `ServerClient`, the
`WorkerClient` twin that talks HTTP, `http` the blocking calls it makes off the GUI thread, and
`token_store` where the app keeps the token (the OS keyring, else a 0600 file).
"""

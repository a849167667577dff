"""The HTTP face of the registry: ``mledger serve`` (see docs/http.md).

``create_app(config)`` (app.py) builds the ASGI application; the routes call the same ``Registry`` the CLI
calls, as the token holder's actor. Modules: errors.py (the one status table), auth.py (tokens and roles),
uploads.py (blobs in and out), logstream.py (the live log), routes.py (the JSON API), run.py (uvicorn).
"""

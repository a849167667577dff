"""modelledger: an event-sourced registry for machine-learning models.

    from modelledger import Registry
    reg = Registry.open()
"""

__version__ = "0.1.0"

__all__ = ["Registry", "__version__"]


def __getattr__(name: str) -> object:
    # `from modelledger import Registry` loads the local registry on first use (PEP 562), so the CLI over
    # HTTP (modelledger.cli -> modelledger.remote) starts without it.
    if name == "Registry":
        from .registry import Registry

        return Registry
    raise AttributeError(f"module 'modelledger' has no attribute {name!r}")

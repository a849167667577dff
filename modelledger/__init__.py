"""modelledger: an event-sourced registry for machine-learning models.

    from modelledger import Registry
    reg = Registry.open()
"""

__version__ = "0.1.0"

from .registry import Registry  # noqa: E402

__all__ = ["Registry", "__version__"]

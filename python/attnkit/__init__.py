"""attnkit: the attention variants of modern LLMs, exact and fast, on NumPy arrays.

The compiled bindings live in the extension ``attnkit._attnkit``; everything in it is re-exported
here, so ``attnkit.attention`` etc. are the extension's functions. ``attnkit.torch`` (imported on
first use, and only then importing torch) wraps the differentiable kernels as
``torch.autograd.Function``s.
"""
from . import _attnkit
from ._attnkit import *  # noqa: F401,F403
from ._attnkit import __version__  # noqa: F401

__doc__ = _attnkit.__doc__


def __getattr__(name):
    # `attnkit.torch` without an explicit `import attnkit.torch`, and without importing torch
    # when it is never used.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'attnkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"torch"})

"""fastcnn's thread pool under threadpoolctl: no configuration, no import.

threadpoolctl finds thread pools among the shared libraries loaded in the
process. Its OpenMP controller sets libgomp's per-thread default
(omp_set_num_threads), which fastcnn's kernels never read: every parallel
region gets fastcnn's own process-wide count. So fastcnn registers a
controller of its own for its extension module, and then

- ``threadpool_info()`` lists it (user_api "openmp", internal_api "fastcnn")
  with ``fastcnn.get_num_threads()``;
- ``threadpool_limits(n)`` and ``threadpool_limits(n, user_api="openmp")`` set
  fastcnn's count for their duration and restore the previous one after.

fastcnn never imports threadpoolctl: if it is already imported when fastcnn
is, the controller is registered at once; otherwise a one-shot import hook
registers it right after threadpoolctl's own import, whenever that happens.
``register_threadpoolctl()`` does it by hand (e.g. after removing the hook).
"""
import importlib.abc
import sys
import warnings

from . import _config

_registered = False


def _controller_class(threadpoolctl):
    class FastcnnController(threadpoolctl.LibController):
        """fastcnn's kernels: the thread count fastcnn passes to every parallel region."""
        user_api = "openmp"
        internal_api = "fastcnn"
        filename_prefixes = ("_native",)          # fastcnn/_native.*.so
        check_symbols = ("fastcnn_thread_limit",)  # ... and no other package's _native

        def get_num_threads(self):
            return _config.get_num_threads()

        def set_num_threads(self, num_threads):
            _config._set(num_threads, warn=False)

        def get_version(self):
            from . import __version__
            return __version__

    return FastcnnController


def _register(threadpoolctl):
    global _registered
    _remove_hook()
    if _registered or not hasattr(threadpoolctl, "register"):  # register: threadpoolctl >= 3
        return
    threadpoolctl.register(_controller_class(threadpoolctl))
    _registered = True


def register_threadpoolctl():
    """Make threadpoolctl see and limit fastcnn's threads (imports threadpoolctl).

    Not needed normally: fastcnn does it by itself as soon as both are
    imported. Calling it again does nothing.

    Raises:
        ImportError: if threadpoolctl is not installed.
    """
    import threadpoolctl
    _register(threadpoolctl)


class _LoaderThenRegister(importlib.abc.Loader):
    """threadpoolctl's own loader, followed by the registration."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            _register(module)
        except Exception as e:  # never break the user's import of threadpoolctl
            warnings.warn(f"fastcnn could not register its threadpoolctl controller: {e!r}",
                          RuntimeWarning)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _ThreadpoolctlHook(importlib.abc.MetaPathFinder):
    """Finds threadpoolctl with the other finders and wraps its loader."""

    def find_spec(self, name, path, target=None):
        if name != "threadpoolctl":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderThenRegister(spec.loader)
                return spec
        return None


_hook = _ThreadpoolctlHook()


def _remove_hook():
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def install():
    """Register now if threadpoolctl is imported, else when it is."""
    module = sys.modules.get("threadpoolctl")
    if module is not None:
        _register(module)
    elif _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)

"""Import fastcnn from this checkout when it is built in place (python setup.py
build_ext --inplace), else the installed one. Reports print which.

Call ``_path.prefer_checkout()`` before importing fastcnn."""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prefer_checkout():
    """Put this checkout first on sys.path if it holds an in-place build.

    Returns True when it does (fastcnn then imports from here), else False."""
    if not glob.glob(os.path.join(ROOT, "fastcnn", "_native*.so")):
        return False
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return True

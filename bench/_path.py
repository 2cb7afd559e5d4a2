"""Import fastcnn from this checkout when it is built in place (python setup.py
build_ext --inplace), else the installed one. Reports print which."""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(ROOT, "fastcnn", "_activation*.so")) and ROOT not in sys.path:
    sys.path.insert(0, ROOT)

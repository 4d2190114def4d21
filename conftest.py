"""Test-wide settings: the fast profile, no network, a non-interactive matplotlib.

They are set before nbval starts any kernel, so the lecture notebooks inherit them too.
"""
import os

os.environ.setdefault("ADVLIB_PROFILE", "fast")
os.environ["ADVLIB_OFFLINE"] = "1"  # tests never download; the download path is tested on local files
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: one thread each (and in the kernels they start), or
    # the workers' thread pools fight over the cores and tiny attacks run many times slower
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

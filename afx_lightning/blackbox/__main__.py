"""Entry point of a plugin worker process: ``python -m afx_lightning.blackbox FD`` (started by the pool)."""

import os
import sys
from multiprocessing.connection import Connection

from .worker import worker_main

if __name__ == "__main__":
    worker_main(Connection(int(sys.argv[1])))
    # Leave without running native library destructors: DPF-based VST3 plugins (zam-plugins) print two
    # "DPF warning: asked to delete component while ... still active" lines per instance ever created when
    # their module is unloaded at exit, thousands of lines after a training run. Nothing here needs
    # finalising: the parent owns (and unlinks) the shared memory, plugin instances die with the process.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

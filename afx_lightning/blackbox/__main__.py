"""Entry point of a plugin worker process: ``python -m afx_lightning.blackbox FD`` (started by the pool)."""

import sys
from multiprocessing.connection import Connection

from .worker import worker_main

if __name__ == "__main__":
    worker_main(Connection(int(sys.argv[1])))

"""Launched once per process: prints ``ready``, then waits for SIGTERM and reports it."""

import os
import signal
import sys
import time


def on_term(signum, frame):
  print(f"process {os.environ['JAXLENS_PROCESS_ID']} got SIGTERM", flush=True)
  sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(120)

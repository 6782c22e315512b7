"""Newsfeed: a Kubernetes-native MLOps platform for personalized newsfeeds (core library)."""

import atexit
import gc

from newsfeed import feast_typechecks

__version__ = "0.1.0"

# Every command and pipeline step imports torch, Feast and MLflow: ~400k long-lived objects.
# - A full collection every 100 young ones, not 10: importing them cost 11 full passes over
#   the growing heap, ~1 s of a 5.8 s import; cyclic garbage still goes, a little later.
# - The interpreter's last collection walks them all again at exit (1-2 s per process);
#   frozen, they are skipped (the memory goes back to the OS either way). Registered first,
#   so it runs after every other exit handler (MLflow's, Ray's).
gc.set_threshold(700, 10, 100)
atexit.register(gc.freeze)
# Feast's classes without typeguard's instrumentation: 3.5 s of every process's start (see there).
feast_typechecks.install()

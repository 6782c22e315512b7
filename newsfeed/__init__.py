"""Newsfeed: a Kubernetes-native MLOps platform for personalized newsfeeds (core library)."""

__version__ = "0.1.0"

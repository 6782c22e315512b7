"""Ray Serve: thin deployments over the feed pipeline in ``newsfeed.feed``."""

"""The models: two-tower retrieval and the multi-task ranker, their inputs and training loop."""

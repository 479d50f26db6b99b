"""batcher: offline LLM workloads through Batch APIs at the least cost per successful answer."""

__version__ = "0.1.0"
